"""Process helpers shared by the multi-process tests: a free loopback port and gloo workers spawned with a deadline."""
import socket
import time
from pathlib import Path

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


def our_processes(marker: str) -> list[int]:
    "Live processes whose command line mentions `marker` (the test's own folder)"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try: cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError: continue
        if marker in cmd: pids.append(int(d.name))
    return pids
