"""The engine: the loop contract, the one training loop, hooks, distributed set-up and the run directory."""
