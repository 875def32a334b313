"""The study: every method of the workbench side by side, one committed JSON per cell, resumable over sittings.

    python benchmarks/study.py --dry-run                  # the cells, done / stale / to do, estimated minutes
    python benchmarks/study.py --max-minutes 90           # run cells not yet done; stop cleanly after the cell running at 90 min
    python benchmarks/study.py --family ssl --only simclr byol
    python benchmarks/study.py --table                    # the tables of the committed results, run nothing
    python benchmarks/study.py --family ssl --only simclr --verify 1   # re-run a done cell, compare every value

A study is a list of cells (family, method, learning rate, seed, budget). Each cell is real console-script runs:
`mssl-train` with the method's own preset and the study's shared recipe, then `mssl-eval` (the linear fast path on the
validation and on the test split, offline k-NN, the label-free `select` criteria). Its result is one JSON file under
results/study/<budget>/<family>/<cell>.json (committed; run directories stay in a temporary folder), written
atomically when the cell ends, holding the command, git commit, torch version, load average at start and end, wall
time, the hash of the package's source, the final metrics and the final eigenspectrum (downsampled). A cell whose JSON exists for the same recipe key
(the hash of its fully resolved training config and evaluation commands) is skipped; a killed runner loses at most
the cell in progress (its children get SIGTERM when it dies). Run it alone on the machine; the load columns show
whether it was. `--dry-run` shows a cell computed by other package code (same recipe) as "done, older code"; `--verify N`
re-runs N of them from scratch and lists every value that differs (results/study/verify/).

Families
- ssl: every registered two-view method (and Matrix-SSL's paper form) on the embedded Fashion-MNIST sample with the
  quickstart's backbone (resnet10t_mini without the stem max-pool, half width), the quickstart's augmentation
  (`small`), bf16 where native, the same images seen (the budget's epochs × 8,000 images of train_fit); each method
  keeps its own loss, heads, teacher and optimiser. Seed 0 sweeps 3 learning rates (0.5×, 1×, 2× the method's
  Fashion-MNIST preset); while the best validation (train_holdout) linear accuracy sits at an edge of the swept rates
  the grid grows by 2× past that edge (at most 3 times; a diverged rate bounds it as well). The chosen rate is then
  run on seeds 1, 2; Matrix-SSL and every row whose mean is within 3 points of it get seeds 3, 4 as well. Test-split
  numbers are reported (the linear head's last epoch), never used to choose.
- baseline: raw pixels and the random-init backbone, through the same k-NN and linear head.
- mae: MAE, U-MAE, M-MAE (their Fashion-MNIST presets: a 4-block 96-d ViT, 4x4 patches) on the same images and
  epochs as ssl, seeds 0-2, the presets' learning rate; M-MAE at λ ∈ {1.25e-3, 3e-3, 1e-2} and U-MAE at λ ∈ {3e-3,
  1e-2, 3e-2} (MAE_ROWS); linear fast path and k-NN.
- long: the second budget, 100 epochs (5× the steps) at each row's chosen 20-epoch rate: Matrix-SSL and SimCLR on 3
  seeds, MEC, VICReg, BYOL and Barlow Twins on 2 (LONG_ROWS).
- published: the as-published arm: every two-view method with its own registry augmentation and its published
  hyper-parameters scaled to this data set (PUBLISHED, each rule stated beside it) at its shared-arm chosen rate, seeds 0-2.
- lm: CE against CE + MCE in both constructions (embedding-space and batch-relation, γ = 0.1) on the `lm-arith-ce`
  preset's generated arithmetic task, seeds 0–2; exact-match accuracy on its 200 test problems, answer CE, hidden
  erank. Every one of those test problems also occurs in training, so the second edition adds the same three
  configurations (`gen-*`, seeds 0–4) on `lm-arith2-ce`: three-step problems whose test problems are held out of
  training by construction, so exact match measures generalisation; each cell records the overlap (0). lm-overhead: `benchmarks/lm_mce.py overhead` (every shape it defines; the 7B shapes by FLOPs).
- protocol: one quickstart run (train/test, seed 0) through every protocol the README lists: linear fast path and
  the official protocol (augmented, LARS, 100 epochs), semi-supervised 1% and 10%, k-NN at k = 20 and 200.
- lever: cells that test an explanation the results chapter gives for a row below its baseline (the paper form's
  learning rate, ridge and clipping; M-MAE's weight; Barlow Twins' gap to an independent implementation; why Matrix-SSL
  trails: γ, λ/μ, Taylor order, the teacher, asymmetric views, at its chosen rate): seed 0 after the sweep, before
  the seeds; a second seed for the levers that moved a row past its baseline, or (Matrix-SSL's) moved validation
  accuracy by a point.
- selection: Kendall τ of RankMe and of LiDAR against linear accuracy within each method's sweep, and the regret of
  picking by each (computed from the ssl cells' JSON with mssl-eval's own `selection_report`).

Pause protocol (so other work can run tests between cells without spoiling the load figures): while a file
/tmp/mssl-study.pause or /tmp/mssl-study.pause.<who> exists the runner waits before its next cell and keeps
/tmp/mssl-study.paused present; whoever needs the machine creates their own pause file, waits for .paused, works,
and removes their file.
"""
from __future__ import annotations

import argparse, functools, hashlib, json, math, os, signal, subprocess, sys, tempfile, time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart_levers import (SAMPLE, baseline_rows, git_commit, load_average, spectrum_points)   # noqa: E402
from quickstart_levers import cli as train_cmd, cli_eval as eval_cmd     # noqa: E402  (the console scripts as `python -m` commands)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "study"
PAUSE, PAUSED = Path("/tmp/mssl-study.pause"), Path("/tmp/mssl-study.paused")
RUNNER_VERSION = 1          # bump when what a cell measures changes (invalidates every cell)

# The shared recipe: the quickstart's data, backbone, augmentation and precision; train_fit / train_holdout split
BACKBONE = ["model.backbone=resnet10t_mini_nopool", "model.backbone_kwargs={channels: [16, 32, 64, 128], stem_width: 8}",
            "model.small_input=false", "model.channels_last=true", "train.precision=auto"]
DATA = [f"data.root={SAMPLE}", "data.train_split=train_fit", "data.val_split=train_holdout", "data.augment=small"]
MONITOR = ["eval.monitor_samples=2000", "eval.knn_train_samples=8000", "train.quiet=true", "train.checkpoint_every=5"]

# Budgets: how many epochs of the 8,000 train_fit images every method sees (eval.every: monitor passes)
# (overrides, learning-rate factors of the seed-0 sweep, seeds); "toy" is the runner's own test: 1 lr, 1 seed, 2 steps
BUDGETS = {"e20": (["train.epochs=20", "eval.every=5"], (1.0, 0.5, 2.0), (0, 1, 2)),
           "toy": (["train.epochs=1", "train.max_steps=2", "eval.every=1", "eval.monitor_samples=256", "eval.knn_train_samples=512"],
                   (1.0,), (0,))}

# (row name, registry method, extra overrides): the two-view methods in the order of the chapter's table
SSL_METHODS = [
    ("matrix_ssl", "matrix_ssl", []),
    # the paper form at its own ridge μ = 0.1/d (null: the form's default); fmnist-matrixssl sets the official μ = 1,
    # at which the paper form's uniformity −(1/d) tr log(C + I) is nearly linear in C and nothing is learnt
    ("matrix_ssl_paper", "matrix_ssl", ["model.loss.form=paper", "model.loss.mu=null"]),
    ("mec", "mec", []), ("simclr", "simclr", []), ("moco_v2", "moco_v2", []), ("byol", "byol", []),
    ("simsiam", "simsiam", []), ("barlow_twins", "barlow_twins", []), ("vicreg", "vicreg", []),
    ("spectral", "spectral", []), ("frossl", "frossl", []), ("mmcr", "mmcr", []), ("ivne", "ivne", []),
]

# The evaluations every ssl cell runs (options after the run directory); {split} is the query split
LINEAR = ["--preset", "fmnist-sample", "train_split=train_fit"]
KNN = ["--preset", "fmnist", f"root={SAMPLE}", "train_split=train_fit", "val_split=test"]
SELECT = ["--preset", "fmnist", f"root={SAMPLE}", "split=train_fit"]
TOY_EVAL = {"linear": ["epochs=1"], "select": ["lidar_images=16", "lidar_views=2", "rankme_samples=256"]}


@dataclass(frozen=True)
class Cell:
    family: str                 # ssl | baseline | selection
    method: str                 # the row name (SSL_METHODS) or the baseline's name
    budget: str
    seed: int = 0
    lr: float | None = None     # absolute base_lr (ssl), None for families without one
    overrides: tuple = ()       # mssl-train overrides beyond the preset
    preset: str = ""            # the mssl-train preset (ssl)
    evals: dict = field(default_factory=dict, hash=False, compare=False)   # extra options per evaluation (toy budget)

    @property
    def name(self) -> str:
        return self.method + (f"-lr{self.lr:g}" if self.lr is not None else "") + (f"-s{self.seed}" if self.family in SEEDED or (self.family == "lever" and self.seed) else "")

    def path(self, out: Path) -> Path: return out / self.budget / self.family / f"{self.name}.json"


SEEDED = ("ssl", "mae", "lm", "long", "published")     # families whose cell names end in -s<seed>


@functools.lru_cache(maxsize=None)
def preset_lr(preset: str) -> float:
    "The base learning rate a method's Fashion-MNIST preset resolves to"
    from mssl_workbench.cli.train import get_preset
    from mssl_workbench.config.schema import config_from_dict
    return float(config_from_dict(get_preset(preset)).optim.base_lr)


def ssl_overrides(budget: str, extra: list[str], lr: float, seed: int) -> tuple:
    return tuple(DATA + BACKBONE + MONITOR + BUDGETS[budget][0] + extra + [f"optim.base_lr={lr:g}", f"train.seed={seed}"])


def ssl_cell(row: str, budget: str, lr: float, seed: int) -> Cell:
    method, extra = next((m, e) for r, m, e in SSL_METHODS if r == row)
    return Cell("ssl", row, budget, seed, lr, ssl_overrides(budget, extra, lr, seed), f"fmnist-{method.replace('_', '')}",
                TOY_EVAL if budget == "toy" else {})


def sweep_lrs(row: str, budget: str, out: Path | None = None) -> list[float]:
    "The seed-0 sweep: the budget's factors (1× first) × the method's Fashion-MNIST preset rate, then (given `out`) the edge extensions"
    method = next(m for r, m, _ in SSL_METHODS if r == row)
    base = preset_lr(f"fmnist-{method.replace('_', '')}")
    lrs = [float(f"{base * f:.6g}") for f in BUDGETS[budget][1]]
    if out is None or len(lrs) < 3: return lrs
    for _ in range(MAX_EXTENSIONS):
        results = {lr: read_cell(ssl_cell(row, budget, lr, 0).path(out)) for lr in lrs}
        if any(r is None for r in results.values()): break
        nxt = extend_sweep(results)
        if nxt is None: break
        lrs.append(nxt)
    return lrs


MAX_EXTENSIONS = 3     # the grid rule: at most three 2× steps past an edge


def extend_sweep(results: dict[float, dict]) -> float | None:
    "The next rate of a complete sweep whose best validation point is at an edge (2× past it), else None"
    from mssl_workbench.reports.results import choose_lr
    best = choose_lr([{**r, "lr": lr} for lr, r in results.items()])
    if best is None: return None                 # every rate failed: nothing to extend from
    swept = sorted(results)                      # a failed rate bounds the grid too: a diverged rate is worse than any
    if best == swept[0]: return float(f"{best / 2:.6g}")
    if best == swept[-1]: return float(f"{best * 2:.6g}")
    return None


def read_cell(path: Path) -> dict | None:
    try: return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError): return None


def chosen_lr(row: str, budget: str, out: Path) -> float | None:
    "The swept rate with the best validation linear accuracy on seed 0; None until the sweep (with its edge extensions) is done"
    lrs = sweep_lrs(row, budget, out)
    results = [read_cell(ssl_cell(row, budget, lr, 0).path(out)) for lr in lrs]
    if any(r is None for r in results): return None
    if len(lrs) >= 3 and len(lrs) < 3 + MAX_EXTENSIONS and extend_sweep(dict(zip(lrs, results))) is not None: return None
    from mssl_workbench.reports.results import choose_lr        # the chapter's rule, one implementation
    return choose_lr(results)


def ssl_cells(budget: str, out: Path, rows: list[str] | None = None) -> list[Cell]:
    "Seed-0 sweep (1× of every method first, then 0.5× and 2×, then the edge extensions), then the seeds at each method's chosen lr"
    rows = [r for r, *_ in SSL_METHODS if rows is None or r in rows]
    cells = [ssl_cell(r, budget, sweep_lrs(r, budget)[i], 0) for i in range(len(BUDGETS[budget][1])) for r in rows]
    for r in rows:
        cells += [ssl_cell(r, budget, lr, 0) for lr in sweep_lrs(r, budget, out)[len(BUDGETS[budget][1]):]]
        lr = chosen_lr(r, budget, out)
        if lr is not None: cells += [ssl_cell(r, budget, lr, s) for s in seeds_of(r, budget, out) if s > 0]
    return cells


EXTRA_SEEDS = (3, 4)      # for Matrix-SSL and every row whose mean is within CLOSE of it
CLOSE = 0.03              # 3 points of test linear accuracy (last epoch)


def seeds_of(row: str, budget: str, out: Path) -> tuple[int, ...]:
    "The budget's seeds; Matrix-SSL and the rows within 3 points of it get two more once both have their first three"
    seeds = BUDGETS[budget][2]
    if len(seeds) < 3: return seeds
    if row == "matrix_ssl": return seeds + EXTRA_SEEDS
    mine, theirs = seed_mean(row, budget, out, seeds), seed_mean("matrix_ssl", budget, out, seeds)
    return seeds + EXTRA_SEEDS if mine is not None and theirs is not None and abs(mine - theirs) <= CLOSE else seeds


def seed_mean(row: str, budget: str, out: Path, seeds) -> float | None:
    "Mean test linear accuracy (last epoch) of a row's `seeds` at its chosen rate; None until all are done and none failed"
    lr = chosen_lr(row, budget, out)
    if lr is None: return None
    rs = [read_cell(ssl_cell(row, budget, lr, s).path(out)) for s in seeds]
    if any(r is None or r.get("failed") for r in rs): return None
    return sum(r["linear_last"] for r in rs) / len(rs)


def pending_seed_cells(budget: str, out: Path, rows: list[str] | None = None) -> list[str]:
    "Rows whose seeds wait for the sweep (listed by --dry-run)"
    return [r for r, *_ in SSL_METHODS if (rows is None or r in rows) and chosen_lr(r, budget, out) is None]


def all_cells(budget: str, out: Path, families: list[str], rows: list[str] | None) -> list[Cell]:
    cells = []
    if "baseline" in families: cells += [Cell("baseline", b, budget) for b in ("raw-pixels", "random-init") if rows is None or b in rows]
    if "ssl" in families: cells += ssl_cells(budget, out, rows)
    if "mae" in families: cells += [mae_cell(m, budget, s) for s in BUDGETS[budget][2] for m, *_ in MAE_ROWS if rows is None or m in rows]
    if "lm" in families: cells += [lm_cell(n, budget, s) for n, s in lm_runs(budget) if rows is None or n in rows]
    if "lm-overhead" in families and rows is None: cells.append(Cell("lm-overhead", "loss-overhead", budget))
    if "protocol" in families and rows is None: cells.append(protocol_cell(budget))
    if "selection" in families and rows is None: cells.append(Cell("selection", "rankme-lidar", budget))
    if "lever" in families: cells += [lever_cell(n, budget, s, out) for n, *_ in LEVERS for s in lever_seeds(n, budget, out) if rows is None or n in rows]
    if "long" in families: cells += long_cells(budget, out, rows)
    if "published" in families: cells += published_cells(budget, out, rows)
    return sorted([c for c in cells if c is not None], key=lambda c: run_round(c, budget))


def run_round(cell: Cell, budget: str) -> int:
    "The order cells run in: a first picture of every family before the sweeps and seeds deepen it"
    if cell.family == "baseline": return 0
    if cell.family == "ssl":
        if cell.seed > 0: return 5
        return 1 if cell.lr == sweep_lrs(cell.method, budget)[0] else 3     # the 1× rate, then the rest of the sweep
    if cell.family in ("mae", "lm"): return 2 if cell.seed == 0 else 6
    if cell.family == "lever": return 4 if cell.seed == 0 else 6
    return {"lm-overhead": 2, "protocol": 2, "long": 7, "published": 8, "selection": 9}[cell.family]


MAE_METHODS = ("mae", "umae", "mmae")
# The masked-autoencoder rows: (row, method, overrides) — each method at its preset's λ, and M-MAE's and U-MAE's λ grids
# (M-MAE: the authors' effective 1.25e-3 and 3e-3 beside the preset's 1e-2; U-MAE: 3e-3 and 3e-2 around its 1e-2)
MAE_ROWS = [("mae", "mae", []), ("umae", "umae", []), ("mmae", "mmae", []),
            ("mmae-lamda1.25e-3", "mmae", ["model.options.lamda=0.00125"]), ("mmae-lamda3e-3", "mmae", ["model.options.lamda=0.003"]),
            ("umae-lamda3e-3", "umae", ["model.options.lamda=0.003"]), ("umae-lamda3e-2", "umae", ["model.options.lamda=0.03"])]
LM_CONFIGS = [("ce", "lm-arith-ce", []), ("mce-embedding", "lm-arith-mce", []),
              ("mce-batch", "lm-arith-mce", ["loss.mce=batch"])]
# the second edition: the same configurations on held-out problems (the test problems kept out of training), 5 seeds
LM_GEN_CONFIGS = [("gen-ce", "lm-arith2-ce", []), ("gen-mce-embedding", "lm-arith2-mce", []),
                  ("gen-mce-batch", "lm-arith2-mce", ["loss.mce=batch"])]
LM_GEN_SEEDS = (0, 1, 2, 3, 4)
FAMILIES = ["baseline", "ssl", "mae", "lm", "lm-overhead", "protocol", "selection", "lever", "long", "published"]

# Levers: cells that test an explanation the chapter gives for a row below its baseline (seed 0; a second seed where
# LEVER_SEEDS says), each a row (ssl or mae) with overrides, evaluated as that family is. (name, base row, overrides, what it tests)
LEVERS = [
    ("matrix_ssl_paper-lr0.1x", "matrix_ssl_paper", ["optim.base_lr=0.05"],
     "paper form at a tenth of the preset rate: the exact log's gradient at μ = 0.1/d is up to 2,560× the official form's"),
    ("matrix_ssl_paper-lr0.01x", "matrix_ssl_paper", ["optim.base_lr=0.005"], "paper form at a hundredth of the preset rate"),
    ("matrix_ssl_paper-mu1d", "matrix_ssl_paper", [f"model.loss.mu={1 / 256:g}"],
     "paper form at μ = 1/d: a 10× smaller gradient scale, the largest μ at which spreading still lowers the loss"),
    ("matrix_ssl_paper-clip", "matrix_ssl_paper", ["optim.grad_clip=1.0"], "paper form with gradient-norm clipping at 1"),
    ("matrix_ssl_paper-clip-mu1d", "matrix_ssl_paper", ["optim.grad_clip=1.0", f"model.loss.mu={1 / 256:g}"],
     "paper form with both levers: clipping at 1 and μ = 1/d"),
    ("mmae-lamda1.25e-3", "mmae", ["model.options.lamda=0.00125"], "M-MAE at the official effective weight 1.25e-3 instead of 0.01"),
    ("mmae-lamda3e-3", "mmae", ["model.options.lamda=0.003"], "M-MAE at λ = 3e-3"),
    # Barlow Twins trails an independent implementation (same loss, head, SGD, rate 0.025, budget: 75.5% test k-NN on seed 0
    # against the row's 70.6%, erank 18); each lever changes one difference at that rate (the second edition, item 7)
    ("barlow_twins-fp32", "barlow_twins", ["optim.base_lr=0.025", "train.precision=fp32"],
     "Barlow Twins at 0.025 in fp32: the study's bf16 autocast gives the cross-correlation bf16 embeddings"),
    ("barlow_twins-wd5e-4", "barlow_twins", ["optim.base_lr=0.025", "optim.weight_decay=5e-4"],
     "Barlow Twins at 0.025 with SGD's usual weight decay 5e-4 (1.5e-6 is the LARS recipe's, where LARS rescales each layer's step)"),
    ("barlow_twins-lastbn", "barlow_twins", ["optim.base_lr=0.025", "model.proj_last_bn=true"],
     "Barlow Twins at 0.025 with BatchNorm after the projector's last layer"),
]
# Why Matrix-SSL trails (the second edition, item 6): one change each to the official form at the row's chosen rate,
# read on validation; a lever that moves validation linear accuracy by a point or more gets a second seed
LEVERS += [
    ("matrix_ssl-gamma0", "matrix_ssl", ["model.loss.gamma=0"],
     "uniformity only (γ = 0): the authors report γ of 0 or 0.1 on CIFAR-10"),
    ("matrix_ssl-gamma0.1", "matrix_ssl", ["model.loss.gamma=0.1"], "alignment weight γ = 0.1"),
    ("matrix_ssl-lamda0.5-mu0.5", "matrix_ssl", ["model.loss.lamda=0.5", "model.loss.mu=0.5"],
     "the official code's defaults λ = μ = 0.5 (the preset: the README's 100-epoch λ = μ = 1)"),
    ("matrix_ssl-order2", "matrix_ssl", ["model.loss.order=2"], "Taylor order 2 of the matrix log (curvature: a quadratic loss)"),
    ("matrix_ssl-order8", "matrix_ssl", ["model.loss.order=8"], "Taylor order 8 of the matrix log (closer to the exact log)"),
    ("matrix_ssl-mu0.25", "matrix_ssl", ["model.loss.mu=0.25"],
     "MEC's curvature: log det(I + ZZᵀ/λ⁻¹) = const + log det(C + (ε²/d)I) with λ⁻¹ = mε²/d, so MEC's ε² = 64 at d = 256 "
     "is the ridge μ = 0.25 (the preset's μ = 1 repels only quadratically; MEC's warm-up from 8λ⁻¹ left out)"),
    ("matrix_ssl-ema0.99", "matrix_ssl", ["model.ema_base=0.99"],
     "teacher momentum 0.99 from 0.996: a time constant of 100 steps, not 250 of the run's 620"),
    ("matrix_ssl-noema", "matrix_ssl", ["model.ema_base=0", "model.ema_final=0"],
     "no EMA teacher: the target branch is the online network under stop-gradient (symmetric, as SimSiam)"),
    ("matrix_ssl-byolaug", "matrix_ssl", ["data.augment=byol"],
     "the registry's own asymmetric BYOL views (blur 1.0 / 0.1, solarize 0 / 0.2) instead of the shared one"),
]
AT_CHOSEN_RATE = {n for n, b, *_ in LEVERS if b == "matrix_ssl"}    # levers on the base row's chosen rate, not its preset's
LEVER_MOVES = 0.01        # a lever that moves seed-0 validation linear accuracy this much gets a second seed
# Levers whose seed-0 cell moved a row past its baseline get a second seed (the base row's seed-1 cell + the overrides)
LEVER_SEEDS = {"matrix_ssl_paper-clip": (0, 1), "mmae-lamda1.25e-3": (0, 1), "barlow_twins-lastbn": (0, 1)}


def lever_seeds(name: str, budget: str, out: Path) -> tuple[int, ...]:
    "Seed 0; a second seed where LEVER_SEEDS says, or (chosen-rate levers) once seed 0 moved validation accuracy ≥ LEVER_MOVES"
    if name not in AT_CHOSEN_RATE: return LEVER_SEEDS.get(name, (0,))
    c0, row = lever_cell(name, budget, 0, out), next(l[1] for l in LEVERS if l[0] == name)
    if c0 is None: return (0,)                                           # (no cell until the row's rate is chosen)
    mine, base = read_cell(c0.path(out)), read_cell(ssl_cell(row, budget, chosen_lr(row, budget, out), 0).path(out))
    if not mine or not base or mine.get("failed") or base.get("failed"): return (0,)
    return (0, 1) if abs(mine["val_linear"] - base["val_linear"]) >= LEVER_MOVES else (0,)


def lever_cell(name: str, budget: str, seed: int = 0, out: Path | None = None) -> Cell | None:
    "A lever: its base row's cell of that seed (ssl: at the preset rate, or the chosen one: None until chosen) with the lever's overrides"
    row, over = next((l[1], l[2]) for l in LEVERS if l[0] == name)
    if row in MAE_METHODS: c = mae_cell(row, budget, seed)
    elif name in AT_CHOSEN_RATE:
        lr = chosen_lr(row, budget, out or OUT)
        if lr is None: return None
        c = ssl_cell(row, budget, lr, seed)
    else: c = ssl_cell(row, budget, sweep_lrs(row, budget)[0], seed)
    return Cell("lever", name, budget, seed, None, tuple(list(c.overrides) + over), c.preset, c.evals)


def mae_cell(row: str, budget: str, seed: int) -> Cell:
    "A masked autoencoder on the ssl cells' images and epochs (its own ViT, augmentation and optimiser)"
    method, extra = next((m, e) for r, m, e in MAE_ROWS if r == row)
    over = DATA[:3] + [o for o in MONITOR] + BUDGETS[budget][0] + extra + [f"train.seed={seed}"]
    return Cell("mae", row, budget, seed, None, tuple(over), f"fmnist-{method}", TOY_EVAL if budget == "toy" else {})


# The second budget (item 5): 5× the steps (100 epochs) at each row's chosen rate of the 20-epoch sweep; (row, seeds)
LONG_ROWS = [("matrix_ssl", 3), ("simclr", 3), ("mec", 2), ("vicreg", 2), ("byol", 2), ("barlow_twins", 2)]
LONG = ["train.epochs=100", "eval.every=25"]


def long_cells(budget: str, out: Path, rows: list[str] | None = None) -> list[Cell]:
    "The long-budget cells of the rows whose rate is chosen (the others wait for their sweep)"
    cells = []
    for row, n in LONG_ROWS:
        lr = chosen_lr(row, budget, out) if rows is None or row in rows else None
        if lr is None: continue
        extra = next(e for r, _, e in SSL_METHODS if r == row)
        for seed in range(n):
            c = ssl_cell(row, budget, lr, seed)          # its preset and evaluations; the overrides add LONG after the budget's
            cells.append(Cell("long", row, budget, seed, lr, ssl_overrides(budget, extra + LONG, lr, seed), c.preset, c.evals))
    return cells


# The as-published arm (item 4): each two-view method with its own registry augmentation (byol's asymmetric views or
# simclr's) and its published hyper-parameters scaled to 8,000 images and 620 steps, at the shared arm's chosen rate.
# Scaling rules (the results chapter states them with their sources):
# - an EMA teacher's time constant 1/(1−τ) a sixth of the run or less: τ = 0.99 (100 steps; BYOL's 0.996 is 250 steps,
#   MoCo's 0.999 is 1,000, more than the run); solo-learn's CIFAR recipes use 0.99 for BYOL-family teachers;
# - MoCo's queue the same share of the data set as MoCo v2's 65,536 of 1.28 M images (5 %): 512 of 8,000 (a multiple of the batch);
# - Barlow Twins' off-diagonal weight scaled with the number of off-diagonal terms per row: 0.0051 × 8,191 / 1,023 ≈ 0.04.
PUBLISHED = {"byol": ["model.ema_base=0.99"], "matrix_ssl": ["model.ema_base=0.99"], "mec": ["model.ema_base=0.99"],
             "moco_v2": ["model.ema_base=0.99", "model.loss.size=512"], "barlow_twins": ["model.loss.lambd=0.04"]}
PUBLISHED_ROWS = [r for r, *_ in SSL_METHODS if r != "matrix_ssl_paper"]


def published_cells(budget: str, out: Path, rows: list[str] | None = None) -> list[Cell]:
    "The as-published arm: seeds 0-2 of every row whose shared-arm rate is chosen"
    cells = []
    for row in PUBLISHED_ROWS:
        lr = chosen_lr(row, budget, out) if rows is None or row in rows else None
        if lr is None: continue
        method, extra = next((m, e) for r, m, e in SSL_METHODS if r == row)
        data = [o for o in DATA if not o.startswith("data.augment=")]          # the preset's (the method's own) augmentation
        for seed in BUDGETS[budget][2]:
            over = data + BACKBONE + MONITOR + BUDGETS[budget][0] + extra + PUBLISHED.get(row, []) + [f"optim.base_lr={lr:g}", f"train.seed={seed}"]
            cells.append(Cell("published", row, budget, seed, lr, tuple(over), f"fmnist-{method.replace('_', '')}", TOY_EVAL if budget == "toy" else {}))
    return cells


def lm_runs(budget: str) -> list[tuple[str, int]]:
    "(configuration, seed) of every lm cell: the first edition's at the budget's seeds, the held-out task's at LM_GEN_SEEDS"
    gen_seeds = BUDGETS[budget][2] if budget == "toy" else LM_GEN_SEEDS
    return [(n, s) for s in BUDGETS[budget][2] for n, *_ in LM_CONFIGS] + [(n, s) for s in gen_seeds for n, *_ in LM_GEN_CONFIGS]


def lm_cell(name: str, budget: str, seed: int) -> Cell:
    preset, extra = next((p, e) for n, p, e in LM_CONFIGS + LM_GEN_CONFIGS if n == name)
    toy = ["train.max_steps=2", "data.n_train=64", "data.n_test=8", "eval.monitor_batch=4"] if budget == "toy" else []
    return Cell("lm", name, budget, seed, None, tuple(extra + toy + [f"train.seed={seed}", "train.quiet=true"]), preset)


def protocol_cell(budget: str) -> Cell:
    toy = ["train.max_steps=2", "train.epochs=1", "eval.every=1", "eval.monitor_samples=256", "eval.knn_train_samples=512"] if budget == "toy" else []
    return Cell("protocol", "quickstart", budget, 0, None, tuple(["train.quiet=true", "train.seed=0"] + toy), "quickstart")


# The protocols of the protocol cell: (key, mssl-eval arguments after the run directory, the eval file it writes)
PROTOCOLS = [("linear_fast", ["linear", "--preset", "fmnist-sample", "val_split=test"], "linear"),
             ("linear_official", ["linear", "--preset", "fmnist-fast", f"root={SAMPLE}", "augment=true"], "linear"),
             ("semisup_1pct", ["semisup", "--preset", "fmnist-1pct", f"root={SAMPLE}"], "semisup-1pct"),
             ("semisup_10pct", ["semisup", "--preset", "fmnist-10pct", f"root={SAMPLE}"], "semisup-10pct"),
             ("knn", ["knn", "--preset", "fmnist", f"root={SAMPLE}"], "knn")]
TOY_PROTOCOL = {"linear": ["epochs=1"], "semisup": ["epochs=1"]}


# ------------------------------------------------------------------------------------------------------ recipe keys
def eval_commands(cell: Cell, run_dir: str) -> dict[str, list[str]]:
    "The mssl-eval command lines of an ssl cell"
    extra = lambda kind: list(cell.evals.get(kind, []))
    if cell.family == "protocol":
        toy = TOY_PROTOCOL if cell.budget == "toy" else {}
        return {key: [args[0], run_dir, *args[1:], *toy.get(args[0], []), "--quiet"] for key, args, _ in PROTOCOLS}
    cmds = {"val_linear": ["linear", run_dir, *LINEAR, "val_split=train_holdout", *extra("linear"), "--quiet"],
            "linear": ["linear", run_dir, *LINEAR, "val_split=test", *extra("linear"), "--quiet"],
            "knn": ["knn", run_dir, *KNN, *extra("knn"), "--quiet"],
            "select": ["select", run_dir, *SELECT, *extra("select"), "--quiet"]}
    if cell.family == "mae" or (cell.family == "lever" and cell.preset.startswith("fmnist-") and
                                 cell.preset[len("fmnist-"):] in MAE_METHODS): cmds.pop("select")     # RankMe/LiDAR are the two-view methods' criteria (the sweep's selection)
    return cmds


def script_hash(path: Path) -> str:
    "Hash of a benchmark script with its lines naming package modules left out: a move of the package's modules (the import"
    " lines) does not change what the script measures, so it does not make its cells stale"
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if "mssl_workbench" not in l]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    "Hash of the package's source (every .py under mssl_workbench/ but the generated doc index): which code computed a cell"
    pkg = ROOT / "mssl_workbench"
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        if f.name == "_modidx.py" or "__pycache__" in f.parts: continue
        h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


IMAGE_FAMILIES = ("ssl", "mae", "protocol", "lever", "long", "published")     # mssl-train on images, then mssl-eval


def recipe_key(cell: Cell) -> str:
    "Hash of everything a cell's numbers depend on: the resolved training config, the evaluation commands, the runner"
    what: dict = {"runner": RUNNER_VERSION, "family": cell.family, "method": cell.method, "budget": cell.budget}
    if cell.family in IMAGE_FAMILIES:
        from mssl_workbench.cli.train import get_preset
        from mssl_workbench.config.schema import apply_overrides, config_from_dict, config_to_dict
        d = config_to_dict(config_from_dict(apply_overrides(get_preset(cell.preset), list(cell.overrides))))
        d.pop("output", None)
        d["data"].pop("root", None)      # where the checkout is does not change a result
        # The online probe's rate changes no number a cell records (the probe reads detached features and its accuracy is
        # not in the cell): hashed at the first edition's value, so that its default moving from 1e-3 to the optimiser's
        # own (PROBE_LR) leaves committed cells done.
        d["eval"]["probe_lr"] = 1e-3
        if not d["eval"].get("final_linear"): d["eval"].pop("final_linear", None)   # (off: an option added after the first edition)
        loss = d["model"]["loss"]
        if d["model"]["method"] in ("matrix_ssl", "mec") and loss.get("gamma", 1.0) is None and loss.get("form", "official") == "official":
            loss["gamma"] = 1.0          # gamma=None is the official form's 1.0 (the paper form's default is λ/(d(1+μ)), a new recipe)
        what["config"] = d
        what["evals"] = eval_commands(cell, "RUN")
    elif cell.family == "lm":
        from mssl_workbench.cli.train import get_preset
        from mssl_workbench.config.schema import rename_keys
        from mssl_workbench.lm.config import LM_RENAMED
        # the preset hashed in the key names of the release that ran the committed cells (train.out_dir, optim.lr, loss.lamda,
        # loss.mu; LM_RENAMED inverted): the renames change no number, so they leave those cells done
        first_names = rename_keys(get_preset(cell.preset), {new: old for old, new in LM_RENAMED.items()}, notice=lambda line: None)
        what["preset"], what["overrides"] = first_names, list(cell.overrides)
    elif cell.family == "lm-overhead":
        what["script"] = script_hash(ROOT / "benchmarks" / "lm_mce.py")
    elif cell.family == "baseline":
        what["budget"] = None            # baselines do not train: one per study, whatever the budget
    text = json.dumps(what, sort_keys=True, default=str).replace(str(SAMPLE), "SAMPLE")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_state(cell: Cell, out: Path) -> str:
    "done (this code) | done, older code (same recipe, other package source) | stale (another recipe) | to do"
    if cell.family == "selection" or not cell.path(out).is_file(): return "to do"
    if not is_done(cell, out): return "stale"
    return "done" if (read_cell(cell.path(out)) or {}).get("source") == source_hash() else "done, older code"


def is_done(cell: Cell, out: Path) -> bool:
    if cell.family == "selection": return False     # derived, cheap: recomputed whenever its inputs change (see run_selection)
    r = read_cell(cell.path(out))
    return r is not None and r.get("recipe_key") == recipe_key(cell)


# ----------------------------------------------------------------------------------------------------------- running
def _child_setup():
    from mssl_workbench.cli.train import set_parent_death_signal
    set_parent_death_signal(signal.SIGKILL)          # a killed runner leaves no orphan training


def run(cmd: list[str]) -> str:
    "Run a console script as a child (dies with this runner); on failure raise with the end of its output"
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_child_setup) as p:
        try: out, _ = p.communicate()
        except BaseException:
            p.kill(); p.wait(timeout=30)
            raise
    if p.returncode: raise CellFailed(p.returncode, shown(cmd), out)
    return out


class CellFailed(Exception):
    "A console script of a cell exited non-zero: the cell's result is the failure (a diverged lr is a sweep outcome)"
    def __init__(self, code: int, command: str, output: str):
        super().__init__(f"exit {code}: {command}")
        self.code, self.command, self.output = code, command, output
        lines = [l for l in output.strip().splitlines() if l.strip()]
        self.message = lines[-1] if lines else ""


def shown(cmd: list[str]) -> str:
    return " ".join({"mssl_workbench.cli.train": "mssl-train", "mssl_workbench.cli.evaluate": "mssl-eval"}.get(cmd[2], cmd[2]) if i == 0 else a
                    for i, a in enumerate(cmd[2:]))


def run_image(cell: Cell, workdir: Path) -> dict:
    "ssl / mae / protocol: mssl-train, then the cell's mssl-eval commands; the metrics, spectra and information record"
    from mssl_workbench.engine.rundir import read_run
    run_dir = Path(tempfile.mkdtemp(prefix=f"{cell.name}-", dir=workdir)) / "run"
    tc = train_cmd("--preset", cell.preset, "--output", str(run_dir), *cell.overrides)
    t0 = time.perf_counter()
    evals, commands = {}, [shown(tc)]
    try:
        run(tc)
        train_wall = time.perf_counter() - t0
        for key, args in eval_commands(cell, str(run_dir)).items():
            ec = eval_cmd(*args)
            commands.append(shown(ec))
            run(ec)
            written = next((f for k, _, f in PROTOCOLS if k == key), args[0]) if cell.family == "protocol" else args[0]
            evals[key] = json.loads((run_dir / "eval" / f"{written}.json").read_text())
            if cell.family == "protocol": evals[key] = {k: v for k, v in evals[key].items() if not isinstance(v, (list, dict)) or k in ("ks", "options")}
    except CellFailed as e:
        print(e.output[-2000:], file=sys.stderr)
        return {"failed": True, "exit": e.code, "failed_command": e.command, "error": e.message, "command": " && ".join(commands)}
    rec = read_run(run_dir)
    s = rec.summary
    traj = [{"epoch": r.get("epoch"), "train_s": r.get("train_s"), "knn": r.get("knn_acc"),
             "erank": ((r.get("monitor") or {}).get("backbone") or {}).get("erank")} for r in rec.epochs]
    spectra = {}
    for space in ("backbone", "embedding"):
        if rec.spectrum_epochs(space):
            idx, vals = spectrum_points(rec.spectrum(space=space))
            spectra[space] = {"index": idx, "values": vals}
    last = next((r for r in reversed(rec.metrics) if "loss" in r), {})
    emb_erank = rec.monitor("erank", "embedding")[1]
    common = {"epochs": s.get("epochs_done"), "steps": s.get("steps"), "train_s": s.get("train_s"), "train_wall_s": round(train_wall, 1),
              "erank": s.get("erank"), "erank_embedding": emb_erank[-1] if emb_erank else None, "collapsed": s.get("collapsed"),
              "info": {space: rec.final_info(space) for space in ("backbone", "embedding")},
              "final_loss": last.get("loss"), "final_terms": last.get("terms"), "trajectory": traj, "spectra": spectra,
              "command": " && ".join(commands)}
    if cell.family == "protocol": return {**common, "protocols": evals, "monitor_knn": s.get("knn_acc")}
    return {**common, "val_knn": s.get("knn_acc"), "val_linear": evals["val_linear"]["top1_best"], "val_linear_last": evals["val_linear"]["top1_last"],
            "linear": evals["linear"]["top1_last"], "linear_last": evals["linear"]["top1_last"], "linear_best": evals["linear"]["top1_best"],
            "knn": evals["knn"].get("k20"), "knn_k200": evals["knn"].get("k200"),
            **({"rankme": evals["select"]["rankme"], "lidar": evals["select"]["lidar"], "select_space": evals["select"]["space"]}
               if "select" in evals else {})}


def run_lm(cell: Cell, workdir: Path) -> dict:
    "One language-model run of the preset (CE or CE + MCE); its summary: exact match on the test problems, CE, ranks"
    run_dir = Path(tempfile.mkdtemp(prefix=f"{cell.name}-", dir=workdir)) / "run"
    tc = train_cmd("--preset", cell.preset, f"output={run_dir}", *cell.overrides)
    try: run(tc)
    except CellFailed as e:
        return {"failed": True, "exit": e.code, "failed_command": e.command, "error": e.message, "command": shown(tc)}
    s = json.loads((run_dir / "summary.json").read_text())
    keep = ("accuracy", "steps", "final_terms", "erank", "rankme", "diff_erank", "wall_s", "train_s")
    return {**{k: s.get(k) for k in keep}, "no_prediction": (s.get("eval") or {}).get("no_prediction"),
            "protocol": (s.get("eval") or {}).get("protocol"),
            **{k: (s.get("data") or {}).get(k) for k in ("test_answers_seen_in_train", "test_problems_seen_in_train")},
            "command": shown(tc)}


def run_lm_overhead(cell: Cell, workdir: Path) -> dict:
    "benchmarks/lm_mce.py overhead: loss-only time and memory of CE + MCE against CE at its shapes, FLOPs at 7B"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "lm_mce.py"), "overhead"] + (["--quick"] if cell.budget == "toy" else [])
    run(cmd)
    return {**json.loads((ROOT / "benchmarks" / "results" / "lm_mce_overhead.json").read_text()), "command": " ".join(["python", *cmd[1:]])}


def run_baseline(cell: Cell, workdir: Path) -> dict:
    "raw-pixels / random-init: k-NN and the fast-path linear head, trained on train_fit, read on train_holdout and test"
    val = baseline_rows(["data.train_split=train_fit", "data.val_split=train_holdout"], workdir)[cell.method]
    test = baseline_rows(["data.train_split=train_fit", "data.val_split=test"], workdir)[cell.method]
    return {"val_knn": val["knn"], "val_linear": val["linear"], "knn": test["knn"], "linear": test["linear_last"],
            "linear_last": test["linear_last"], "linear_best": test["linear"], "erank": test.get("erank"), "note": test["note"],
            "command": "python benchmarks/study.py --family baseline (quickstart_levers.baseline_rows on train_fit → train_holdout, test)"}


def run_selection(cell: Cell, out: Path) -> dict | None:
    "Kendall τ and regret of RankMe and LiDAR against linear accuracy within each method's seed-0 sweep (from the JSON)"
    from mssl_workbench.cli.evaluate import selection_report
    entries, sources = [], []
    for row, *_ in SSL_METHODS:
        for lr in sweep_lrs(row, cell.budget, out):
            p = ssl_cell(row, cell.budget, lr, 0).path(out)
            r = read_cell(p)
            if r is None or r.get("failed"): continue
            sources.append(str(p.relative_to(out)))
            entries.append({"run": r["cell"], "method": row, "rankme": r["rankme"], "lidar": r["lidar"],
                            "accuracy": {"linear": r.get("linear_last", r["linear"]), "val_linear": r["val_linear"]}})   # the head's last epoch
    if not entries: return None
    report = selection_report(entries)
    return {"report": report, "sources": sources, "complete": all(chosen_lr(r, cell.budget, out) is not None for r, *_ in SSL_METHODS),
            "command": "python benchmarks/study.py --family selection (mssl_workbench.cli.evaluate.selection_report over the sweep cells)"}


def write_cell(path: Path, row: dict):
    "One cell's JSON, written atomically (the run writer's atomic_write: a killed runner leaves the old file or none)"
    from mssl_workbench.engine.rundir import atomic_write
    atomic_write(path, json.dumps(row, indent=1, default=float) + "\n")


def commit(path: Path, message: str):
    "Commit one result file (only it: other staged changes stay staged); a failure is reported, not fatal"
    try:
        subprocess.run(["git", "add", str(path)], cwd=path.parent, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-q", "-m", message, "--", str(path)], cwd=path.parent, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"  (not committed: {getattr(e, 'stderr', b'').decode(errors='replace').strip() or e})", flush=True)


def pause_requests() -> list[Path]:
    "Pause files present: /tmp/mssl-study.pause and /tmp/mssl-study.pause.<who> (one per party that needs the machine)"
    return sorted(p for p in PAUSE.parent.glob(PAUSE.name + "*") if p != PAUSED)

def wait_while_paused():
    if not pause_requests(): return
    PAUSED.touch()
    print(f"paused while {', '.join(map(str, pause_requests()))} exist(s)", flush=True)
    try:
        while pause_requests(): time.sleep(5)
    finally: PAUSED.unlink(missing_ok=True)


def estimate_minutes(cell: Cell, out: Path) -> float:
    "Minutes a cell will take: the mean wall time of the same method's finished cells, else the family's default"
    same = [read_cell(p) for p in (out / cell.budget / cell.family).glob(f"{cell.method}-*.json")]
    walls = [r["wall_s"] for r in same if r and r.get("wall_s")]
    if walls: return sum(walls) / len(walls) / 60
    if cell.budget == "toy": return 0.5
    return {"ssl": 2.0, "mae": 3.0, "lm": 3.0, "lm-overhead": 5.0, "protocol": 12.0, "baseline": 0.5, "selection": 0.05, "lever": 2.5,
            "long": 10.0, "published": 2.5}[cell.family]


def run_cell(cell: Cell, out: Path, workdir: Path) -> dict | None:
    load0, t0 = load_average(), time.perf_counter()
    try:
        if cell.family in IMAGE_FAMILIES: row = run_image(cell, workdir)
        elif cell.family == "lm": row = run_lm(cell, workdir)
        elif cell.family == "lm-overhead": row = run_lm_overhead(cell, workdir)
        elif cell.family == "baseline": row = run_baseline(cell, workdir)
        else: row = run_selection(cell, out)
    except CellFailed as e:
        print(e.output[-2000:], file=sys.stderr)
        row = {"failed": True, "exit": e.code, "failed_command": e.command, "error": e.message, "command": e.command}
    if row is None: return None
    if cell.family == "lever": row = {**row, **next({"base": b, "lever_overrides": o, "note": n} for l, b, o, n in LEVERS if l == cell.method)}
    import torch
    return {"cell": cell.name, "family": cell.family, "method": cell.method, "budget": cell.budget, "seed": cell.seed, "lr": cell.lr,
            "preset": cell.preset or None, "overrides": list(cell.overrides), "recipe_key": recipe_key(cell), **row,
            "wall_s": round(time.perf_counter() - t0, 1), "load_start": load0, "load_end": load_average(),
            "commit": git_commit(), "source": source_hash(), "torch": torch.__version__, "threads": child_threads(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def child_threads() -> int:
    "The thread count of the cells' console scripts: OMP_NUM_THREADS as the runner was started with, else torch's default"
    import torch
    return int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="e20", choices=list(BUDGETS))
    ap.add_argument("--family", nargs="*", default=FAMILIES, choices=FAMILIES)
    ap.add_argument("--only", nargs="*", help="only these rows (methods or baselines)")
    ap.add_argument("--resume", action="store_true", help="skip cells already done for the current recipe (the default; kept for clarity)")
    ap.add_argument("--rerun", action="store_true", help="run the selected cells even when done")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new cell after this many minutes")
    ap.add_argument("--dry-run", action="store_true", help="list the cells and their estimated minutes; run nothing")
    ap.add_argument("--table", action="store_true", help="print the committed results; run nothing")
    ap.add_argument("--commit", action="store_true", help="git-commit each cell's JSON when it is written")
    ap.add_argument("--out", default=str(OUT), help="results folder (default results/study)")
    ap.add_argument("--ignore-pause", action="store_true", help="do not wait for pause files (a toy or test study beside the real one)")
    ap.add_argument("--workdir", default=None, help="where run directories go (default: a temporary folder)")
    ap.add_argument("--verify", type=int, default=0, metavar="N",
                    help="re-run N done cells (of --family/--only) from scratch and compare every measured value with the committed one")
    args = ap.parse_args(argv)
    out = Path(args.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.table:
        print(table(out, args.budget))
        return 0
    cells = all_cells(args.budget, out, args.family, args.only)
    if args.dry_run:
        todo = 0.0
        for c in cells:
            state = cell_state(c, out)
            done = state.startswith("done")
            est = 0.0 if done else estimate_minutes(c, out)
            todo += est
            print(f"{state:16s} {c.family:9s} {c.name:34s} {est:5.1f} min  {c.path(out).relative_to(out)}")
        for r in pending_seed_cells(args.budget, out, args.only) if "ssl" in args.family else []:
            print(f"{'later':16s} {'ssl':9s} {r + ' seeds':34s} {2 * estimate_minutes(ssl_cell(r, args.budget, sweep_lrs(r, args.budget)[0], 0), out):5.1f} min  (after its sweep)")
        print(f"{todo:.0f} min to run")
        return 0
    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mssl-study-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.verify: return verify(cells, out, workdir, args.verify, args.commit)
    start, ran = time.perf_counter(), 0
    while True:
        todo = [c for c in all_cells(args.budget, out, args.family, args.only)
                if (args.rerun and c.name not in _ran) or (not is_done(c, out) and c.name not in _ran)]
        todo = [c for c in todo if c.family != "selection"] or [c for c in todo if c.family == "selection"]
        if not todo: break
        if args.max_minutes is not None and (time.perf_counter() - start) / 60 >= args.max_minutes:
            print(f"--max-minutes {args.max_minutes:g} reached: {len(todo)} cell(s) left", flush=True)
            break
        if not args.ignore_pause: wait_while_paused()
        cell = todo[0]
        print(f"{cell.family}/{cell.name} ...", flush=True)
        row = run_cell(cell, out, workdir)
        _ran.add(cell.name)
        if row is None:
            print(f"{cell.family}/{cell.name}: nothing to compute yet", flush=True)
            if cell.family == "selection": break
            continue
        old = read_cell(cell.path(out))
        if cell.family == "selection" and old and {k: v for k, v in old.items() if k not in VOLATILE} == {k: v for k, v in row.items() if k not in VOLATILE}:
            break
        write_cell(cell.path(out), row)
        ran += 1
        print(f"{cell.family}/{cell.name}: {summary_line(row)}", flush=True)
        if args.commit: commit(cell.path(out), f"study {args.budget}: {cell.family}/{cell.name}")
        if cell.family == "selection": break
    print(f"{ran} cell(s) written in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return 0


_ran: set = set()
VOLATILE = ("wall_s", "load_start", "load_end", "commit", "source", "torch", "threads", "finished")
TIMING = ("train_s", "train_wall_s", "command")     # seconds, and commands naming temporary folders: not what a re-run must reproduce


def measured(row):
    "A cell's numbers without its provenance, timings and commands (nested records too): what a re-run must reproduce"
    if isinstance(row, dict): return {k: measured(v) for k, v in row.items() if k not in VOLATILE + TIMING}
    if isinstance(row, list): return [measured(v) for v in row]
    return row


def comparable(old: dict, new: dict) -> tuple[dict, dict]:
    "The measured values of a committed cell and its re-run, in one vocabulary: a first-edition cell's `linear` was the"
    " head's best test epoch (`linear_best` now; results.last_epoch), and values an older runner did not record are not compared"
    from mssl_workbench.reports.results import last_epoch
    old, new = measured(last_epoch(old)), measured(new)
    return old, {k: v for k, v in new.items() if k in old}


def differences(old, new, key: str = "") -> list[str]:
    "Every path where two measured records differ, as `key: old -> new`"
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{key}[{i}]")]
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


def verify(cells: list[Cell], out: Path, workdir: Path, n: int, commit_it: bool) -> int:
    "Re-run `n` done cells from scratch at this commit and compare every measured value with the committed one; 1 if any differs"
    # a cell re-runs at the thread count it ran with (a matmul's reduction order depends on it): OMP_NUM_THREADS picks them
    done = [c for c in cells if c.family not in ("selection", "lm-overhead") and is_done(c, out)
            and read_cell(c.path(out)).get("threads") == child_threads()][:n]
    if len(done) < n: print(f"{len(done)} done cell(s) of these rows ran with {child_threads()} thread(s) (OMP_NUM_THREADS)", flush=True)
    bad = 0
    for cell in done:
        print(f"verify {cell.family}/{cell.name} ...", flush=True)
        old, new = read_cell(cell.path(out)), run_cell(cell, out, workdir)
        diff = differences(*comparable(old, new))
        bad += bool(diff)
        print(f"  {'identical: every measured value' if not diff else f'{len(diff)} value(s) differ'}"
              f" (committed at {old.get('commit')}, source {old.get('source', 'unrecorded')}; now {new['commit']}, source {new['source']})", flush=True)
        for d in diff[:20]: print("   ", d, flush=True)
        path = out / "verify" / f"{cell.budget}-{cell.family}-{cell.name}-{new['source']}.json"
        write_cell(path, {"cell": cell.name, "family": cell.family, "budget": cell.budget, "identical": not diff, "differences": diff,
                          "committed": {k: old.get(k) for k in VOLATILE}, "rerun": {k: new.get(k) for k in VOLATILE}})
        if commit_it: commit(path, f"study verify: {cell.family}/{cell.name} {'identical' if not diff else 'differs'}")
    return 1 if bad else 0


def summary_line(r: dict) -> str:
    if r.get("failed"): return f"FAILED (exit {r['exit']}): {r['error']}"
    if r["family"] == "lm": return f"exact match {100 * r['accuracy']:.1f}%, CE {r['final_terms']['ce']:.3f}, {r['wall_s']:.0f} s"
    if r["family"] in ("lm-overhead", "protocol"): return f"{r['wall_s']:.0f} s, load {r['load_start'][0]:.2f}/{r['load_end'][0]:.2f}"
    if r["family"] == "selection": return f"{len(r['sources'])} sweep cells"
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    return (f"linear {pct(r.get('linear'))} (val {pct(r.get('val_linear'))}), k-NN {pct(r.get('knn'))}, "
            f"erank {r.get('erank') or 0:.1f}, {r['wall_s']:.0f} s, load {r['load_start'][0]:.2f}/{r['load_end'][0]:.2f}")


def table(out: Path, budget: str) -> str:
    "The results chapter's tables (mssl_workbench.reports.results) of the committed cells"
    from mssl_workbench.reports import results as R
    cells = R.load_cells(out, budget)
    return "\n\n".join([R.ssl_table(R.ssl_summary(cells), R.baseline_summary(cells)), R.family_table(cells, "mae", R.MAE_COLUMNS),
                        R.family_table(R.lm_rows(cells), "lm", R.LM_COLUMNS), R.overhead_table(cells), R.protocol_table(cells),
                        R.selection_table(cells), R.lever_table(cells), R.orderings_table(cells)])


if __name__ == "__main__":
    sys.exit(main())
