"""MAE / U-MAE / M-MAE at the process level.

1. Two gloo processes on CPU, float64: with grad_semantics="allreduce" the regulariser's DDP-averaged parameter
   gradients equal one process's gradients on the global batch; with "rank_local" (the official M-MAE gather)
   they equal those divided by the world size. The same for the whole MaskedAutoencoder objective (a tiny ViT,
   fixed masking noise): allreduce matches the global batch, rank_local gives rec + (λ / W)·reg.
2. Every preset of the three methods builds its model and lowers its objective on a fixed batch in a few AdamW
   steps (the ImageNet presets at their real widths; ViT-L with fewer blocks to bound the test's memory and time).
3. Through the engine (mssl-train): fmnist-mmae resumed from a step-3 checkpoint ends bit-identical to a straight run.

The workers are module-level functions so that torch.multiprocessing can spawn them; each run uses a free
localhost port, and both the process group and the join are bounded by timeouts.
"""
import datetime

import pytest
import timm
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from procs import spawn_workers
from mssl_workbench.methods.mae import MAE_METHODS, MAE_SPECS, MaskedAutoencoder, create_mae_model, mae_regularizer

WORLD, LOCAL, D_IN, D = 2, 6, 5, 8   # m = 12 global rows; D = 8 lies between the local (6) and global (12) row counts
REG_CASES = [("tcr", False, "allreduce"), ("tcr", True, "allreduce"), ("square", False, "allreduce"),
             ("tcr", False, "rank_local"), ("tcr", True, "rank_local"), ("square", False, "rank_local")]
LAMDA = 0.5
TIMEOUT_S = 300


def fixed_batch_losses(model: MaskedAutoencoder, x: torch.Tensor, *, steps: int = 8, lr: float = 1e-3, seed: int = 0) -> list[float]:
    "Train `model` on one batch with fixed masking noise and the MAE AdamW recipe; the objective before each step (the chapter's helper)"
    from timm.optim import create_optimizer_v2
    noise = torch.rand(x.shape[0], model.num_patches, generator=torch.Generator().manual_seed(seed)).to(x.device)
    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(x, noise=noise).loss
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        losses.append(loss.item())
    return losses


def linear_problem():
    "The same global inputs and linear feature map in every process (seeded)"
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(WORLD * LOCAL, D_IN, generator=g, dtype=torch.float64)
    model = nn.Linear(D_IN, D).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(D, D_IN, generator=g, dtype=torch.float64))
        model.bias.copy_(torch.randn(D, generator=g, dtype=torch.float64))
    return x, model


def reg_grads(model, x, reg, center, semantics, distributed):
    model.zero_grad()
    loss = mae_regularizer(model(x), reg, mu=3.0, center=center, distributed=distributed, grad_semantics=semantics)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


def tiny_mae(reg="tcr", semantics="allreduce", distributed=False):
    torch.manual_seed(7)   # identical initial weights in every process
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=4, in_chans=1,
                            embed_dim=16, depth=1, num_heads=2)
    return MaskedAutoencoder(vit, decoder_dim=8, decoder_depth=1, decoder_heads=2, reg=reg, lamda=LAMDA,
                             grad_semantics=semantics, distributed=distributed).double()


def mae_problem():
    g = torch.Generator().manual_seed(99)
    return (torch.randn(WORLD * LOCAL, 1, 16, 16, generator=g, dtype=torch.float64),
            torch.rand(WORLD * LOCAL, 16, generator=g, dtype=torch.float64))


def mae_grads(model, x, noise):
    model.zero_grad()
    out = model(x, noise=noise)
    out.loss.backward()
    return {k: v.detach() for k, v in out.terms.items()}, [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]


def _worker(rank: int, port: int, out_dir: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        x, model = linear_problem()
        ddp = DistributedDataParallel(model)
        reg_results = [reg_grads(ddp, x[rows], reg, center, sem, True) for reg, center, sem in REG_CASES]
        images, noise = mae_problem()
        mae_results = {}
        for sem in ("allreduce", "rank_local"):
            ddp_mae = DistributedDataParallel(tiny_mae("tcr", sem, distributed=True))
            mae_results[sem] = mae_grads(ddp_mae, images[rows], noise[rows])
        torch.save({"reg": reg_results, "mae": mae_results}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_workers(out_dir: str):
    spawn_workers(_worker, WORLD, TIMEOUT_S, out_dir)


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("gloo")
    run_workers(str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def close(a, b):
    return torch.allclose(a, b, rtol=1e-6, atol=1e-10)


def test_regulariser_gradients_allreduce_and_rank_local(worker_results):
    x, model = linear_problem()
    for rank, res in enumerate(worker_results):
        for (reg, center, sem), (loss, grads) in zip(REG_CASES, res["reg"]):
            ref_loss, ref_grads = reg_grads(model, x, reg, center, sem, False)   # one process, the global batch
            assert close(loss, ref_loss), (rank, reg, center, sem, loss, ref_loss)  # every rank sees the global value
            scale = 1.0 if sem == "allreduce" else 1.0 / WORLD
            for g, r in zip(grads, ref_grads):
                assert r.abs().max() > 1e-3, (reg, center)                      # a real gradient is compared
                assert close(g, scale * r), (rank, reg, center, sem, (g - scale * r).abs().max())
            if sem == "rank_local":                                              # ...and it is not the allreduce one
                assert not close(grads[0], ref_grads[0])


def test_whole_objective_under_ddp(worker_results):
    images, noise = mae_problem()
    ref_terms, ref_grads = mae_grads(tiny_mae("tcr"), images, noise)             # the global batch, one process
    _, rec_grads = mae_grads(tiny_mae("none"), images, noise)                    # its reconstruction part alone
    reg_part = [(g - r) / LAMDA for g, r in zip(ref_grads, rec_grads)]           # d reg / d theta
    for rank, res in enumerate(worker_results):
        terms, grads = res["mae"]["allreduce"]
        assert close(terms["reg"], ref_terms["reg"])                             # the gathered global batch
        for g, r in zip(grads, ref_grads):
            assert close(g, r), (rank, (g - r).abs().max())
        _, grads = res["mae"]["rank_local"]
        for g, rec, reg in zip(grads, rec_grads, reg_part):
            assert close(g, rec + LAMDA / WORLD * reg), (rank, (g - rec - LAMDA / WORLD * reg).abs().max())
    assert max(r.abs().max() for r in reg_part) > 1e-6                           # the regulariser did contribute


PRESETS = [(m, name) for m in MAE_METHODS for name in MAE_SPECS[m].presets]


@pytest.mark.parametrize("method,preset", PRESETS)
def test_preset_lowers_objective_on_fixed_batch(method, preset):
    torch.set_num_threads(1)
    cfg, note = MAE_SPECS[method].presets[preset]
    assert note and cfg["model"]["method"] == method and cfg["data"]["augment"] == MAE_SPECS[method].augment
    model_cfg = dict(cfg["model"])
    size, chans = cfg["data"]["image_size"], cfg["data"]["in_chans"]
    if "vitl16" in preset:   # ViT-L/16 widths and decoder as in the preset, 2 of its 24 blocks (memory and time)
        model_cfg["backbone_kwargs"] = {**model_cfg.get("backbone_kwargs", {}), "depth": 2}
    torch.manual_seed(0)
    model = create_mae_model(MAE_SPECS[method], model_cfg, in_chans=chans, image_size=size, distributed=False)
    assert model.reg == MAE_METHODS[method] and model.method == method
    if preset.startswith("imagenet"):
        assert (model.num_features, model.num_patches) == ((768 if "vitb16" in preset else 1024), 196)
        assert len(model.decoder_blocks) == 8 and model.decoder_embed.out_features == 512
    imagenet = preset.startswith("imagenet")
    x = torch.randn(2 if imagenet else 32, chans, size, size)
    # the preset's own peak lr at its batch of 1024 for ImageNet; the Fashion-MNIST preset's at batch 256
    lr = cfg["optim"]["base_lr"] * cfg["train"]["batch_size"] / 256
    losses = fixed_batch_losses(model, x, steps=3, lr=lr)
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < losses[0], (preset, losses)


def test_engine_resume_is_bit_identical(tmp_path, console):
    "fmnist-mmae through mssl-train: 6 steps straight == 3 steps, then --resume auto to 6 (weights and losses)"
    import json
    import subprocess
    overrides = ["train.deterministic=true", "train.log_every=1", "train.checkpoint_every_steps=3", "eval.every=100",
                 "eval.monitor_samples=128", "eval.knn_train_samples=256", "eval.probe=false", "train.batch_size=32"]
    def train(out, steps, *extra):
        r = subprocess.run([console("mssl-train"), "--preset", "fmnist-mmae", "--quiet", "--output", str(out), *extra,
                            *overrides, f"train.max_steps={steps}"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    train(tmp_path / "a", 6)
    train(tmp_path / "b", 3)
    train(tmp_path / "b", 6, "--resume", "auto")
    a, b = (torch.load(tmp_path / r / "checkpoints" / "step_00000006.pt", weights_only=True)["model"] for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(line)["loss"] for line in open(tmp_path / r / "metrics.jsonl")] for r in "ab"]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert "reg" in json.loads(open(tmp_path / "a" / "metrics.jsonl").readline())["terms"]


@pytest.mark.parametrize("preset", ["imagenet-mmae-vitl16-200ep", "imagenet-umae-vitb16-200ep"])
def test_preset_config_states_the_effective_weight(preset, console):
    "mssl-train --dry-run: the resolved config (what config.yaml records) holds the official effective weight and says so"
    import subprocess
    import yaml
    from mssl_workbench.methods.mae import effective_lamda
    r = subprocess.run([console("mssl-train"), "--preset", preset, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = yaml.safe_load(r.stdout)
    o = cfg["model"]["options"]
    # M-MAE pretrain.sh: --lamb 1e-2 on 8 processes with a rank-local gather backward = 1.25e-3 on one process
    assert effective_lamda(o["lamda"], o["grad_semantics"], 8) == pytest.approx(1e-2 / 8, rel=1e-12)
    assert effective_lamda(o["lamda"], o["grad_semantics"], 1) == pytest.approx(1e-2 / 8, rel=1e-12)
    assert "effective regulariser weight 0.00125" in cfg["notes"]
    if "vitb16" in preset: assert "unverified" in cfg["notes"]
