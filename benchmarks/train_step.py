"""Per-step time of mssl-train's loop (`fit`, default hooks) vs a bare hand-written loop with the same
model, loss, augmentation, batch and in-memory data. Prints a table, writes JSON.

    python benchmarks/train_step.py [--quick] [--method matrix_ssl] [--backbone resnet10t] [--batch 128]

Both loops run the same number of steps, alternately (A B A B ...) so that machine noise hits both;
the per-step time is the median of the step-to-step intervals after warm-up steps.
"""
import argparse, copy, json, statistics, tempfile, time
from pathlib import Path

import torch

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from mssl_workbench.data.augment import create_augment
from mssl_workbench.data.datasets import create_dataset
from mssl_workbench.config.schema import config_from_dict
from mssl_workbench.engine.hooks import Hook, default_hooks
from mssl_workbench.methods.registry import build_method_model, get_method
from mssl_workbench.methods.backbones import momentum_schedule
from mssl_workbench.engine.image import fit
from mssl_workbench.engine.loop import lr_at


class StepClock(Hook):
    "Records the wall time at the end of every step"
    order = 100
    def before_fit(self, run): self.times = [time.perf_counter()]
    def after_step(self, run): self.times.append(time.perf_counter())


def engine_steps(cfg, steps):
    clock = StepClock()
    cfg.train.max_steps = steps
    fit(cfg, hooks=default_hooks(cfg) + [clock])
    return [b - a for a, b in zip(clock.times[1:], clock.times[2:])]  # skip the first step (lazy inits)


def bare_steps(cfg, steps):
    "The loop a researcher would write by hand for the same model, loss and data"
    torch.manual_seed(cfg.train.seed)
    ds = create_dataset("fashion_mnist", root=cfg.data.root, fraction=cfg.data.fraction)
    m = cfg.model
    model = build_method_model(get_method(m.method), m, in_chans=1, image_size=cfg.data.image_size)
    aug = create_augment(cfg.data.augment, size=cfg.data.image_size, in_chans=1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.optim.weight_decay)
    ema = m.ema_base if model.has_teacher else None
    b = cfg.train.batch_size
    total = steps
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(ds), generator=g)
    times = [time.perf_counter()]
    for step in range(steps):
        idx = order[(step * b) % (len(ds) - b):][:b]
        x1, x2 = aug(ds.images[idx])
        for group in opt.param_groups: group["lr"] = lr_at(step, total_steps=total, warmup_steps=1, peak=cfg.lr)
        loss = model(x1, x2).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None: model.momentum_update(momentum_schedule(step, total, base=ema, final=m.ema_final))
        loss.item()
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times[1:], times[2:])]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--method", default="matrix_ssl")
    ap.add_argument("--backbone", default="resnet10t_mini")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--small-input", action="store_true", help="small-image stem (16x the compute at 28 px)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    args = ap.parse_args()
    steps = 6 if args.quick else 12
    rounds = 2 if args.quick else args.rounds
    torch.set_num_threads(torch.get_num_threads())
    out = Path(tempfile.mkdtemp())
    def cfg():
        return config_from_dict({"output": str(out / "run"), "data": {"root": str(SAMPLE_FASHION_MNIST)},
                                 "model": {"method": args.method, "backbone": args.backbone, "small_input": args.small_input},
                                 "optim": {"warmup_epochs": 0.0},
                                 "train": {"epochs": 1, "batch_size": args.batch, "quiet": True, "log_every": 10},
                                 "eval": {"monitor_samples": 256, "knn_train_samples": 512, "probe": True}})
    engine, bare = [], []
    for r in range(rounds):
        engine += engine_steps(cfg(), steps)
        bare += bare_steps(cfg(), steps)
    e, b = statistics.median(engine), statistics.median(bare)
    rows = [dict(loop="mssl-train (fit, default hooks)", median_step_s=e, steps=len(engine)),
            dict(loop="bare hand-written loop", median_step_s=b, steps=len(bare))]
    print(f"method={args.method} backbone={args.backbone} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"{'loop':34s} {'median s/step':>14s} {'steps':>6s} {'ratio':>6s}")
    for r in rows: print(f"{r['loop']:34s} {r['median_step_s']:14.4f} {r['steps']:6d} {r['median_step_s'] / b:6.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "ratio": e / b}, indent=1))
    print(f"ratio engine/bare = {e / b:.3f} (target <= 1.10); wrote {args.out}")
