"""Which levers let Matrix-SSL beat raw pixels on the embedded Fashion-MNIST sample in 3 CPU minutes: one table.

    python benchmarks/quickstart_levers.py                 # every lever not yet measured, then the table
    python benchmarks/quickstart_levers.py --list          # the levers and whether each has a result
    python benchmarks/quickstart_levers.py --only base zoom --rerun
    python benchmarks/quickstart_levers.py --table         # print the table of the committed results only
    python benchmarks/quickstart_levers.py --final         # the chosen recipe on train/test, seeds 0, 1, 2

Every lever row is a real `mssl-train --preset quickstart` run with the lever's overrides, tuned on the validation
split carved out of the training images (data.train_split=train_fit: 8,000 images; data.val_split=train_holdout:
2,000, stratified, fixed), followed by `mssl-eval linear --preset fmnist-sample` (the cached-feature fast path of the
official linear protocol at the sample's batch size) on the same two splits. k-NN uses the run's own k = 20, τ = 0.07 — the printed raw-pixel
baseline's. Two baseline rows sit in the same table: the standardised raw pixels (k-NN and the same linear head on
the pixels) and the random-init backbone of the quickstart. The `--final` rows run the preset as a user does
(train on the 10,000 training images, test on the 2,000 test images), once per seed, and are the only rows that
touch the test split.

Results are one JSON file per row in results/quickstart_levers/ (committed, so the table survives sessions); a
row whose file exists for the same overrides is skipped unless --rerun. Each file holds the command, the git
commit, the torch version, the load average at start and end, the training seconds (the sum of the epoch times,
evaluation excluded), the k-NN trajectory, and the final eigenspectrum of the held-out embeddings (downsampled).
Run it alone on the machine: the seconds are only comparable between rows measured on a quiet machine (see the
load columns).
"""
import argparse, json, os, platform, signal, subprocess, sys, tempfile, time
from pathlib import Path

import torch

from mssl_workbench.study.run import git_commit, load_average, spectrum_points   # the study runner's provenance and spectrum helpers

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "fashion-mnist-sample"
OUT = ROOT / "results" / "quickstart_levers"
VAL = ["data.train_split=train_fit", "data.val_split=train_holdout"]
# The quickstart recipe before this study (so every lever row is "the old recipe + one change")
OLD = ["model.backbone=resnet10t_mini", "data.augment=small", "train.epochs=6", "eval.every=1", "train.precision=fp32", "model.channels_last=false",
       "model.loss.lamda=1.0", "model.loss.mu=1.0", "model.loss.gamma=1.0", "model.loss.order=4", "model.ema_base=0.996",
       "optim.base_lr=0.5", "train.batch_size=256"]

def lever(*overrides: str) -> list[str]:
    "The old recipe with `overrides` replacing its settings of the same keys"
    keys = {o.split("=", 1)[0] for o in overrides}
    return [o for o in OLD if o.split("=", 1)[0] not in keys] + list(overrides)

# (name, group, overrides over the quickstart preset, what it tests); preset "quickstart" unless the name says otherwise
LEVERS = [
    ("old-recipe", "recipe", lever(), "the quickstart before this study: small augmentation, 6 epochs, fp32, evaluation every epoch"),
    ("aug-shift", "augmentation", lever("data.augment=shift"), "translation only (≤ 4 px), flip; no crop, no colour"),
    ("aug-zoom", "augmentation", lever("data.augment=zoom"), "zoom 0.8–1.1 + shift ≤ 3 px, flip; no colour"),
    ("aug-mae", "augmentation", lever("data.augment=mae"), "resized crop 0.2–1 + flip; no colour ops"),
    ("aug-simclr", "augmentation", lever("data.augment=simclr"), "strong: crop 0.08–1, brightness/contrast 0.8, blur p 0.5"),
    ("lamda-0.25", "loss", lever("model.loss.lamda=0.25"), "weaker uniformity (cross-covariance log-det)"),
    ("lamda-4", "loss", lever("model.loss.lamda=4.0"), "stronger uniformity"),
    ("mu-0.5", "loss", lever("model.loss.mu=0.5"), "ridge μ = 0.5 (the code's default): more curvature of the Taylor log"),
    ("gamma-0", "loss", lever("model.loss.gamma=0.0"), "no alignment (covariance-matching) term, as the authors allow on CIFAR-10"),
    ("order-2", "loss", lever("model.loss.order=2"), "Taylor order 2: the spectral-contrastive-like truncation"),
    ("ema-0.99", "teacher", lever("model.ema_base=0.99"), "faster teacher"),
    ("ema-0", "teacher", lever("model.ema_base=0.0", "model.ema_final=0.0"), "teacher = the online network (stop-gradient only)"),
    ("proj-64", "heads", lever("model.proj_dim=64", "model.pred_hidden=64"), "64-d embedding: the log-det has less room, repulsion stays active"),
    ("no-maxpool", "backbone", lever("model.backbone=resnet10t_mini_nopool"), "no stem max-pool: 14x14 after the stem, last stage at 2x2 (2.5x FLOPs)"),
    ("half-width", "backbone", lever("model.backbone_kwargs={channels: [16, 32, 64, 128], stem_width: 8}"), "channels 16-32-64-128"),
    ("batch-128", "schedule", lever("train.batch_size=128"), "twice the steps per epoch"),
    ("lr-0.2", "optimiser", lever("optim.base_lr=0.2"), "lower learning rate"),
    ("lr-1.5", "optimiser", lever("optim.base_lr=1.5"), "higher learning rate"),
    ("wd-5e-4", "optimiser", lever("optim.weight_decay=5e-4"), "weight decay 5e-4 instead of 1e-5"),
    ("bf16-cl", "speed", lever("train.precision=bf16", "model.channels_last=true"), "bf16 autocast + channels_last on the CPU (oneDNN)"),
    ("eval-end", "speed", lever("eval.every=6"), "monitor only at the end (k-NN, spectra, MI every epoch cost seconds)"),
    ("epochs-18", "schedule", lever("train.epochs=18", "train.precision=bf16", "model.channels_last=true", "eval.every=3"), "three times the epochs at bf16 speed"),
    ("quickstart", "recipe", [], "the quickstart preset as it stands"),
    ("quickstart-byol-views", "augmentation", ["data.augment=byol"],
     "the quickstart with the registry's asymmetric BYOL views (blur 1.0 / 0.1, solarize 0 / 0.2): the study's best Matrix-SSL lever on validation"),
    ("quickstart-quarter-width", "backbone", ["model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 4}", "train.epochs=60", "eval.every=12"],
     "the quickstart at a quarter width and twice its epochs: does narrower keep winning at similar seconds?"),
    ("quickstart-full-width", "backbone", ["model.backbone_kwargs={}", "train.epochs=16", "eval.every=4"],
     "the quickstart at full width (32-64-128-256) and about half the epochs: width against epochs at similar training seconds"),
    ("simclr", "reference", ["model.method=simclr", "train.epochs=6", "eval.every=1"], "SimCLR (fmnist-simclr preset: τ 0.2, SGD 0.3, 2-layer 128-d head) on the same data and epochs"),
    ("simclr-quickstart", "reference", ["model.method=simclr", "model.backbone=resnet10t_mini_nopool",
                                        "model.backbone_kwargs={channels: [16, 32, 64, 128], stem_width: 8}", "train.epochs=30",
                                        "train.precision=auto", "model.channels_last=true", "eval.every=6"],
     "SimCLR with the quickstart's backbone, epochs and precision"),
]

BASELINES = ("raw-pixels", "random-init")


def result_path(name: str) -> Path: return OUT / f"{name}.json"


def preset_of(name: str) -> str:
    "The preset a row trains from: the SimCLR reference rows use SimCLR's own, every other row the quickstart"
    return "fmnist-simclr" if name.startswith("simclr") else "quickstart"


def recipe_key(name: str, overrides: list[str]) -> str:
    "Hash of the fully resolved config a row trains with: a row is redone when the preset or the overrides change"
    import hashlib
    from mssl_workbench.cli.train import get_preset
    from mssl_workbench.config.schema import apply_overrides, config_from_dict, config_to_dict
    preset = preset_of(name)
    d = config_to_dict(config_from_dict(apply_overrides(get_preset(preset), [o for o in overrides if not o.startswith("model.method")])))
    d.pop("output", None); d.get("data", {}).pop("root", None)
    d["eval"].pop("final_linear", None)     # the fast-path probe after training changes no number a row records (it runs its own)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def have(name: str, overrides: list[str]) -> bool:
    p = result_path(name)
    if not p.is_file(): return False
    try: row = json.loads(p.read_text())
    except json.JSONDecodeError: return False
    return row.get("overrides") == overrides and row.get("recipe_key") == recipe_key(name, overrides)


def write(name: str, row: dict):
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = result_path(name).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(row, indent=1) + "\n")
    tmp.replace(result_path(name))


# The fast path of `mssl-eval linear` at the sample's scale: its `fmnist-sample` preset (cached features, the official
# BN + Linear head and cosine schedule, batch 256, plain SGD). The rows written before the preset existed spelled
# the same options out (batch_size=256 lars=false lr=0.1 lr_batch=256 epochs=50), as their `command` shows.
LINEAR = ["--preset", "fmnist-sample"]


def run_quietly(cmd: list[str]):
    "Run a command (stopped with this script: no orphan keeps training); on failure show the end of its output and stop"
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        try: out, _ = p.communicate()
        except BaseException:
            p.terminate(); p.wait(timeout=30)
            raise
    if p.returncode:
        print(out[-3000:], file=sys.stderr)
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mssl_workbench.cli.train", *args]


def run_lever(name: str, group: str, overrides: list[str], note: str, *, split: list[str], seed: int, workdir: Path) -> dict:
    "mssl-train with the overrides, then mssl-eval linear (fast path) on the same splits; the row of the table"
    from mssl_workbench.engine.rundir import read_run
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)) / "run"     # a fresh folder per attempt
    preset, asked = preset_of(name), overrides
    if preset != "quickstart":     # the reference method's own preset, on the quickstart's data and monitor sizes
        overrides = [f"data.root={SAMPLE}", "eval.monitor_samples=2000", "eval.knn_train_samples=10000",
                     *[o for o in overrides if not o.startswith("model.method")]]
    train_cmd = cli("--preset", preset, "--output", str(run_dir), "train.quiet=true", f"train.seed={seed}", *split, *overrides)
    load0, t0 = load_average(), time.perf_counter()
    run_quietly(train_cmd)
    train_wall = time.perf_counter() - t0
    eval_split = [f"train_split={split[0].split('=')[1]}", f"val_split={split[1].split('=')[1]}"] if split else []
    eval_cmd = cli_eval("linear", str(run_dir), *LINEAR, *eval_split)
    run_quietly(eval_cmd)
    load1 = load_average()
    rec = read_run(run_dir)
    s, lin = rec.summary, rec.evals["linear"]
    times = [r.get("time_s") or 0.0 for r in rec.epochs if r.get("epoch", 0) > 0]
    cum, traj = 0.0, []
    for r in rec.epochs:     # cumulative training seconds at each monitor pass (older records: the sum of epoch times)
        if r.get("epoch", 0) > 0: cum += r.get("time_s") or 0.0
        traj.append({"epoch": r.get("epoch"), "train_s": round(r.get("train_s", cum), 1), "knn": r.get("knn_acc")})
    index, spectrum = spectrum_points(rec.spectrum(space="backbone")) if rec.spectrum_epochs("backbone") else ([], [])
    return {"lever": name, "group": group, "overrides": split + asked, "recipe_key": recipe_key(name, split + asked),
            "note": note, "seed": seed, "preset": preset,
            "split": "train_fit / train_holdout (validation)" if split else "train / test",
            "epochs": s["epochs_done"], "steps": s["steps"], "train_s": s.get("train_s", round(sum(times), 1)),
            "wall_s": round(train_wall, 1), "knn": s["knn_acc"], "linear": lin["top1_best"], "linear_last": lin["top1_last"],
            "erank": s["erank"], "rankme": s.get("rankme"), "raw_pixel_knn": s["raw_pixel_knn_acc"],
            "collapsed": s.get("collapsed"), "trajectory": traj, "spectrum_backbone": spectrum, "spectrum_backbone_index": index,
            "command": " ".join(["mssl-train", *train_cmd[3:]]) + " && " + " ".join(["mssl-eval", *eval_cmd[3:]]),
            "commit": git_commit(), "torch": torch.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads(), "load_start": load0, "load_end": load1}


def cli_eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "mssl_workbench.cli.evaluate", *args]


def baseline_rows(split: list[str], workdir: Path) -> dict[str, dict]:
    "Raw pixels (k-NN + the linear protocol's head on the pixels: `raw_pixel_linear`) and the quickstart's backbone at random init"
    from mssl_workbench.cli.train import get_preset
    from mssl_workbench.config.schema import apply_overrides, config_from_dict
    from mssl_workbench.core.metrics import extract_features, knn_accuracy, monitor_metrics
    from mssl_workbench.cli.evaluate import LINEAR_PRESETS, LinearConfig, _feature_batches, random_init_run, train_linear_head, _load_trained
    from mssl_workbench.evaluation.common import load_split, tensor_prepare
    from mssl_workbench.evaluation.linear import raw_pixel_linear
    preset = apply_overrides(get_preset("quickstart"), split)
    cfg = config_from_dict(preset)
    bank, held = load_split(cfg, cfg.data.train_split), load_split(cfg, cfg.data.val_split)
    prep = tensor_prepare(cfg)                   # the normalised input training used (the run's mean and std)
    lc = LinearConfig(**LINEAR_PRESETS["fmnist-sample"][0])
    rows = {}
    def row(name, bf, hf, head, note, erank=None):
        "k-NN on the features, then `head()`: the linear head's {top1_best, top1_last}"
        load0, t0 = load_average(), time.perf_counter()
        knn = knn_accuracy(bf, bank.labels, hf, held.labels, k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
        res = head()
        return {"lever": name, "group": "baseline", "overrides": split, "note": note, "seed": 0,
                "split": "train_fit / train_holdout (validation)" if split else "train / test", "epochs": 0, "steps": 0,
                "train_s": 0.0, "knn": knn, "linear": res["top1_best"], "linear_last": res["top1_last"], "erank": erank,
                "commit": git_commit(), "torch": torch.__version__, "load_start": load0, "load_end": load_average(),
                "wall_s": round(time.perf_counter() - t0, 1)}
    flat = lambda ds: prep(ds.images).flatten(1)
    rows["raw-pixels"] = row("raw-pixels", flat(bank), flat(held), lambda: raw_pixel_linear(cfg, bank, held, lc),
                             "standardised raw pixels (the baseline mssl-train prints)")
    ckpt = random_init_run(Path(tempfile.mkdtemp(prefix="random-init-", dir=workdir)) / "run", preset)
    model, _ = _load_trained(ckpt, device="cpu")
    feats = lambda ds: extract_features(model.features, ds.images, prepare=prep)
    bf, hf = feats(bank), feats(held)
    head = lambda: train_linear_head(_feature_batches(bf, bank.labels, lc.batch_size, lc.seed), hf, held.labels,
                                     num_features=bf.shape[1], num_classes=len(bank.classes), lc=lc)
    rows["random-init"] = row("random-init", bf, hf, head, "the quickstart backbone, untrained (seed 0)", erank=monitor_metrics(hf)[0]["erank"])
    return rows


def table(rows: list[dict]) -> str:
    head = f"| {'row':<24} | {'group':<12} | {'split':<5} | {'seed':>4} | {'epochs':>6} | {'train s':>7} | {'k-NN %':>6} | {'linear %':>8} | {'erank':>6} | {'load start/end':>15} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        er = "" if r.get("erank") is None else f"{r['erank']:.1f}"
        split = "val" if r["split"].startswith("train_fit") else "test"
        load = f"{r['load_start'][0]:.2f}/{r['load_end'][0]:.2f}"
        lines.append(f"| {r['lever']:<24} | {r['group']:<12} | {split:<5} | {r['seed']:>4} | {r['epochs']:>6} | {r['train_s']:>7.1f} | "
                     f"{100 * r['knn']:>6.1f} | {100 * r['linear']:>8.1f} | {er:>6} | {load:>15} |")
    return "\n".join(lines)


def committed_rows() -> list[dict]:
    order = {n: i for i, (n, *_) in enumerate(LEVERS)}
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    key = lambda r: (r["group"] != "baseline", not r["split"].startswith("train_fit"), order.get(r["lever"], 10**6), r["lever"])
    return sorted(rows, key=key)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only these rows")
    ap.add_argument("--rerun", action="store_true", help="run rows that already have a result")
    ap.add_argument("--list", action="store_true", help="list the rows and whether each has a result")
    ap.add_argument("--table", action="store_true", help="print the table of the committed results, run nothing")
    ap.add_argument("--final", action="store_true", help="the quickstart preset on train/test, seeds 0 1 2 (and the test-split baselines)")
    ap.add_argument("--workdir", default=None, help="where the run directories go (default: a temporary folder)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # a kill stops the run in progress too (see run_quietly)
    # the runs are child processes: they take OMP_NUM_THREADS when it is set (as this process does), else 2 (the README's)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
    if args.list:
        for name, group, ov, note in LEVERS: print(f"{'done' if have(name, VAL + ov) else '    '}  {name:<24} {group:<12} {' '.join(ov) or '(the preset)'}")
        for name in BASELINES: print(f"{'done' if result_path(name).is_file() else '    '}  {name:<24} baseline")
        return 0
    if not args.table:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="quickstart-levers-"))
        if args.final:
            for seed in (0, 1, 2):
                name = f"final-s{seed}"
                if (args.rerun or not result_path(name).is_file()) and (not args.only or name in args.only):
                    write(name, run_lever(name, "final", [], "the quickstart preset as a user runs it", split=[], seed=seed, workdir=workdir))
                    print(f"{name}: done", flush=True)
            base = {f"{k}-test": v for k, v in baseline_rows([], workdir).items()}
        else:
            for name, group, ov, note in LEVERS:
                if args.only and name not in args.only: continue
                if have(name, VAL + ov) and not args.rerun: continue
                print(f"{name}: {' '.join(ov) or '(the preset)'}", flush=True)
                write(name, run_lever(name, group, ov, note, split=VAL, seed=0, workdir=workdir))
            base = {} if args.only and not set(args.only) & set(BASELINES) else baseline_rows(VAL, workdir)
        for name, row in base.items():
            if args.rerun or not result_path(name).is_file(): write(name, {**row, "lever": name})
    rows = committed_rows()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
