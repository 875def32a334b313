"""Two gloo processes on CPU: with `gather_distributed=True`, every loss of the registry gives, on each rank,
the loss of the global batch, and DDP's averaged parameter gradients equal a single process's gradients on
that global batch (to 1e-5; float64 throughout, so the real agreement is far tighter).

The workers are module-level functions so that `torch.multiprocessing` can spawn them; each run uses a free
localhost port, and both the process group and the join are bounded by timeouts.
"""
import datetime

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from procs import spawn_workers
from mssl_workbench.objectives.registry import LOSSES, get_loss

WORLD, LOCAL, D_IN, D = 2, 6, 5, 8   # m = 12 global rows; D = 8 > 6 = local rows and < 12 = global rows
OPTIONS = {   # small, fast settings; every registered loss is covered
    "matrix_ssl": [dict(), dict(lamda=0.5, mu=0.5, order=2), dict(form="paper"), dict(form="paper", low_rank=True)],
    "mec": [dict(lamda_inv=4.0)], "simclr": [dict()], "moco_v2": [dict(dim=D, size=30)], "byol": [dict()],
    "simsiam": [dict()], "barlow_twins": [dict()], "vicreg": [dict()], "spectral": [dict()],
    "frossl": [dict(), dict(low_rank=True, invariance_weight=2.0)], "mmcr": [dict(), dict(lamda=0.5)],
    "ivne": [dict(), dict(low_rank=True)],
}
CASES = [(name, kw) for name in LOSSES for kw in OPTIONS[name]]
TIMEOUT_S = 240




def arity(name: str) -> int:
    "How many embedding matrices the loss's forward takes"
    return len(list(__import__("inspect").signature(LOSSES[name].forward).parameters)) - 1


def problem():
    "The same global data, online model and fixed target embeddings in every process (seeded)"
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2, WORLD * LOCAL, D_IN, generator=g, dtype=torch.float64)       # two views
    targets = torch.randn(2, WORLD * LOCAL, D, generator=g, dtype=torch.float64)    # target-branch embeddings
    model = nn.Linear(D_IN, D).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(D, D_IN, generator=g, dtype=torch.float64))
        model.bias.copy_(torch.randn(D, generator=g, dtype=torch.float64))
    return x, targets, model


def loss_and_grads(model, x, targets, name, kw, gather):
    "Loss value and parameter gradients of one registered loss on the given (local or global) rows"
    torch.manual_seed(99)   # MoCoQueue's random initial queue: the same in every process
    loss_fn = get_loss(name, gather_distributed=gather, **kw).double()
    model.zero_grad()
    z1, z2 = model(x[0]), model(x[1])
    inputs = {1: (z1,), 2: (z1, z2), 4: (z1, z2, targets[0], targets[1])}[arity(name)]
    loss = loss_fn(*inputs).loss
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


def _worker(rank: int, port: int, out_dir: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        x, targets, model = problem()
        ddp = DistributedDataParallel(model)
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        results = [loss_and_grads(ddp, x[:, rows], targets[:, rows], name, kw, gather=True) for name, kw in CASES]
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_workers(out_dir: str):
    spawn_workers(_worker, WORLD, TIMEOUT_S, out_dir)


def test_gathered_losses_match_single_process_global_batch(tmp_path):
    run_workers(str(tmp_path))
    x, targets, model = problem()
    for rank in range(WORLD):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(results) == len(CASES)
        for (name, kw), (loss, grads) in zip(CASES, results):
            ref_loss, ref_grads = loss_and_grads(model, x, targets, name, kw, gather=False)
            assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-8), (rank, name, kw, loss, ref_loss)
            for g, r in zip(grads, ref_grads):
                assert torch.allclose(g, r, rtol=1e-5, atol=1e-8), (rank, name, kw, (g - r).abs().max())
            assert all(r.abs().max() > 0 for r in ref_grads), (name, kw)   # a real gradient was compared


def test_gather_without_process_group_is_identity():
    from mssl_workbench.objectives.common import gather_embeddings
    z = torch.randn(4, 3, requires_grad=True)
    assert not dist.is_initialized() and gather_embeddings(z) is z
