"""Process helpers shared by the multi-process tests: a free loopback port and gloo workers spawned with a deadline."""
import socket
import time

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_workers(worker, world: int, timeout_s: float, *args):
    "Run `worker(rank, port, *args)` in `world` spawned processes; fail the test (and stop them) past the deadline"
    ctx = mp.spawn(worker, args=(free_port(), *args), nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive(): p.terminate()
            pytest.fail(f"the {world} gloo workers did not finish within {timeout_s} s")
