"""MAE vs U-MAE vs M-MAE on Fashion-MNIST at one fixed CPU budget, and the throughput claims of the MAE design.

    python benchmarks/mmae.py                    # the reduced run (about 12-15 min on one core)
    python benchmarks/mmae.py --steps 2000 --batch 256 --seeds 0 1 2   # a longer budget
    python benchmarks/mmae.py --skip-quality     # throughput only

Quality: the same small ViT, the model of the fmnist-* presets (4x4 patches at 28 px, 4 blocks, 96-d; a 1-block 64-d
decoder), the same steps, batch,
AdamW recipe and masking, for each method and seed; then on frozen CLS features of unmasked images
(`model.features`): a linear probe (multinomial logistic regression on standardised features, L-BFGS),
k-NN accuracy (mssl_workbench.core.metrics.knn_accuracy, k=20, cosine, T=0.07) and the effective rank of the centred
feature covariance (exp entropy of its normalised eigenvalues). Rows for raw pixels and for the untrained encoder
give the floor. The paper's ordering (M-MAE >= U-MAE >= MAE on linear probe) is the hypothesis; the table reports
what was measured.

Throughput (ViT-B/16 preset shapes, CPU, reduced batch): (1) encoder forward on the visible 25% of the tokens vs
a full forward at r = 0.75; (2) the regulariser (TCR and U-MAE, forward + backward) at the preset's global batch
m = 1024, d = 768, against a training step (forward + backward + AdamW) of the whole ViT-B/16 MAE measured per image
at a small batch and scaled linearly to 1024 images (and to the 128 images one of 8 ranks processes).

Writes a table to stdout and JSON to benchmarks/results/mmae.json.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mssl_workbench.data.augment import FASHION_MNIST_MEAN, FASHION_MNIST_STD, create_augment
from mssl_workbench.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from mssl_workbench.core.metrics import extract_features, knn_accuracy  # noqa: E402
from mssl_workbench.core.matrix import eigenspectrum, erank_from_values  # noqa: E402
from mssl_workbench.methods.mae import (MAE_METHODS, MAE_SPECS, create_mae_encoder, create_mae_model,  # noqa: E402
                                 mae_regularizer, random_masking)
from timm.optim import create_optimizer_v2  # noqa: E402

# the model of the fmnist-<method> presets, without its method-specific `reg` (each spec supplies its own)
_PRESET_MODEL = MAE_SPECS["mae"].presets["fmnist-mae"][0]["model"]
BENCH_MODEL = {"backbone": _PRESET_MODEL["backbone"], "small_input": _PRESET_MODEL["small_input"],
               "backbone_kwargs": _PRESET_MODEL["backbone_kwargs"],
               "options": {k: v for k, v in _PRESET_MODEL["options"].items() if k != "reg"}}


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images[:, None].float() / 255 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]


def train(method: str, seed: int, data, *, steps: int, batch: int, lr: float, warmup: int):
    "One run: AdamW (0.9, 0.95), wd 0.05 without decay on tokens/norms/biases, warm-up then cosine; returns model, log"
    torch.manual_seed(seed)
    model = create_mae_model(MAE_SPECS[method], BENCH_MODEL, in_chans=1, image_size=28, distributed=False)
    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    augment = create_augment("mae", size=28, in_chans=1, views=1, seed=seed)
    g = torch.Generator().manual_seed(seed)
    log, t0 = [], time.perf_counter()
    model.train()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups: group["lr"] = lr * scale
        idx = torch.randint(len(data.images), (batch,), generator=g)
        (view,) = augment(data.images[idx][:, None])
        out = model(view)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            log.append({"step": step, "loss": out.loss.item(), **{k: v.item() for k, v in out.terms.items()}})
    return model.eval(), log, time.perf_counter() - t0


def linear_probe(train_x, train_y, test_x, test_y, *, wd: float = 1e-4, iters: int = 200) -> float:
    "Multinomial logistic regression on standardised frozen features (L-BFGS, L2 weight decay); test accuracy"
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = ((train_x - mean) / std).double(), ((test_x - mean) / std).double()
    classes = int(train_y.max()) + 1
    W = torch.zeros(a.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, bias], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ W + bias, train_y) + wd * W.square().sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad(): return ((b @ W + bias).argmax(1) == test_y).double().mean().item()


def evaluate(encode, bank_x, bank_y, test_x, test_y) -> dict:
    tr = extract_features(encode, bank_x, batch_size=500)
    te = extract_features(encode, test_x, batch_size=500)
    spectrum = eigenspectrum(te.double())
    return {"linear_probe": linear_probe(tr, bank_y, te, test_y), "knn": knn_accuracy(tr, bank_y, te, test_y, k=20),
            "erank": erank_from_values(spectrum).item(), "feature_dim": te.shape[1]}


def quality(args) -> dict:
    train_split, test_split = load_fashion_mnist("train"), load_fashion_mnist("test")
    gb = torch.Generator().manual_seed(1234)
    bank = torch.randperm(len(train_split), generator=gb)[:args.bank]
    bank_x, bank_y = normalise(train_split.images[bank]), train_split.labels[bank]
    test_x, test_y = normalise(test_split.images[:args.test]), test_split.labels[:args.test]
    rows = [{"method": "raw pixels", "seed": None, **evaluate(lambda x: x.flatten(1), bank_x, bank_y, test_x, test_y)}]
    print(f"data: {train_split.source}; bank {len(bank_x)}, test {len(test_x)}", flush=True)
    for seed in args.seeds:
        torch.manual_seed(seed)
        init = create_mae_model(MAE_SPECS["mae"], BENCH_MODEL, in_chans=1, image_size=28, distributed=False).eval()
        rows.append({"method": "untrained encoder", "seed": seed, **evaluate(init.features, bank_x, bank_y, test_x, test_y)})
        for method in MAE_METHODS:
            model, log, seconds = train(method, seed, train_split, steps=args.steps, batch=args.batch, lr=args.lr,
                                        warmup=max(1, args.steps // 10))
            row = {"method": method, "seed": seed, **evaluate(model.features, bank_x, bank_y, test_x, test_y),
                   "train_seconds": seconds, "final_rec": log[-1]["rec"], "final_reg": log[-1].get("reg"), "log": log}
            rows.append(row)
            print(f"  {method:5s} seed {seed}: probe {row['linear_probe']:.4f} knn {row['knn']:.4f} erank {row['erank']:.1f} "
                  f"rec {row['final_rec']:.4f} ({seconds:.0f} s)", flush=True)
    summary = {}
    for method in ["raw pixels", "untrained encoder", *MAE_METHODS]:
        sel = [r for r in rows if r["method"] == method]
        summary[method] = {k: {"mean": sum(r[k] for r in sel) / len(sel), "values": [r[k] for r in sel]}
                           for k in ("linear_probe", "knn", "erank")}
    ordering = [summary[m]["linear_probe"]["mean"] for m in ("mmae", "umae", "mae")]
    return {"setup": {"model": BENCH_MODEL, "steps": args.steps, "batch": args.batch, "lr": args.lr, "seeds": args.seeds,
                      "bank": args.bank, "test": args.test, "augment": "mae", "mask_ratio": 0.75,
                      "lamda": 1e-2, "mu": 3.0, "features": "cls_doublenorm"},
            "rows": rows, "summary": summary,
            "paper_ordering_holds": bool(ordering[0] >= ordering[1] >= ordering[2])}


def _time(fn, reps: int) -> float:
    fn()                                    # warm-up
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best


def throughput(args) -> dict:
    torch.manual_seed(0)
    spec = MAE_SPECS["mmae"]
    preset, _ = spec.presets["imagenet-mmae-vitb16-200ep"]
    model = create_mae_model(spec, preset["model"], in_chans=3, image_size=224, distributed=False)
    B = args.throughput_batch
    x = torch.randn(B, 3, 224, 224)
    L, D = model.num_patches, model.num_features
    ids_keep = random_masking(torch.rand(B, L), 0.75)[0]
    with torch.no_grad():
        t_visible = _time(lambda: model._encode(x, ids_keep), args.reps)
        t_full = _time(lambda: model._encode(x, None), args.reps)
    opt = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    def step():
        out = model(x); opt.zero_grad(set_to_none=True); out.loss.backward(); opt.step()
    t_step = _time(step, max(1, args.reps - 1))
    per_image = t_step / B
    reg = {}
    for name in ("tcr", "square"):
        z = torch.randn(1024, D, requires_grad=True)
        def fwd_bwd():
            z.grad = None
            mae_regularizer(z, name, mu=3.0).backward()
        t = _time(fwd_bwd, args.reps)
        reg[name] = {"seconds_m1024": t, "fraction_of_step_1024_images": t / (per_image * 1024),
                     "fraction_of_step_128_images_per_rank": t / (per_image * 128),
                     "fraction_same_batch": _time(lambda: mae_regularizer(torch.randn(B, D, requires_grad=True), name).backward(),
                                                  args.reps) / t_step}
    return {"shapes": {"model": "vit_base_patch16_224 MAE, decoder 512-d/8/16", "image": 224, "patches": L, "visible": ids_keep.shape[1],
                       "batch": B, "reg_m": 1024, "reg_d": D},
            "encoder_visible_seconds": t_visible, "encoder_full_seconds": t_full, "visible_over_full": t_visible / t_full,
            "ideal_ratio_tokens": (ids_keep.shape[1] + 1) / (L + 1),
            "train_step_seconds": t_step, "train_step_seconds_per_image": per_image, "regularizer": reg}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--bank", type=int, default=5000, help="training images used for the probe and the k-NN memory bank")
    p.add_argument("--test", type=int, default=2000, help="test images evaluated")
    p.add_argument("--throughput-batch", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mmae.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = {"benchmark": "mmae", "command": " ".join(["python benchmarks/mmae.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                          "processor": platform.processor() or platform.machine()}}
    if not args.skip_throughput:
        result["throughput"] = tp = throughput(args)
        print(f"throughput (ViT-B/16, batch {tp['shapes']['batch']}): encoder visible {tp['encoder_visible_seconds']:.3f} s, "
              f"full {tp['encoder_full_seconds']:.3f} s, ratio {tp['visible_over_full']:.3f} (token ratio {tp['ideal_ratio_tokens']:.3f}); "
              f"train step {tp['train_step_seconds']:.2f} s ({tp['train_step_seconds_per_image']:.3f} s/image)", flush=True)
        for name, r in tp["regularizer"].items():
            print(f"  {name:6s} m=1024 d=768: {r['seconds_m1024'] * 1e3:.1f} ms = {100 * r['fraction_of_step_1024_images']:.3f}% of a "
                  f"1024-image step, {100 * r['fraction_of_step_128_images_per_rank']:.2f}% of a 128-image rank step", flush=True)
    if not args.skip_quality:
        result["quality"] = q = quality(args)
        print(f"\n| method | linear probe | k-NN | CLS erank |  ({args.steps} steps x batch {args.batch}, seeds {args.seeds})")
        print("|---|---|---|---|")
        for method, s in q["summary"].items():
            cell = lambda k, f: " / ".join(f.format(v) for v in s[k]["values"]) + f" (mean {f.format(s[k]['mean'])})"
            print(f"| {method} | {cell('linear_probe', '{:.4f}')} | {cell('knn', '{:.4f}')} | {cell('erank', '{:.1f}')} |")
        print(f"paper ordering M-MAE >= U-MAE >= MAE on linear probe holds: {q['paper_ordering_holds']}")
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
