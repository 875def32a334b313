"""The console scripts: mssl-train and mssl-eval."""
