"""The study: every method of the workbench side by side, one committed JSON per cell, resumable over sittings.

    python benchmarks/study.py --dry-run                  # the cells, done / stale / to do, estimated minutes
    python benchmarks/study.py --max-minutes 90           # run cells not yet done; stop cleanly after the cell running at 90 min
    python benchmarks/study.py --family ssl --only simclr byol
    python benchmarks/study.py --table                    # the tables of the committed results, run nothing
    python benchmarks/study.py --family ssl --only simclr --verify 1   # re-run a done cell, compare every value

This is `mssl-study` (mssl_workbench.cli.study; the machinery in mssl_workbench.study, chapters 25-26) run on the
project's own study: the study file below (`study_dict`), the project's own families (baseline, mae, lm, lm-overhead,
protocol, lever: `Family` subclasses in this file), and results/study/ as the output folder.

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
  training by construction, so exact match measures generalisation; each cell records the overlap (0), and the
  teacher-forced answer CE (nats/token, `lm.train.answer_ce`) on the test problems (per problem too) and on as many
  training problems, a continuous companion of the bimodal exact match. lm-overhead: `benchmarks/lm_mce.py overhead` (every shape it defines; the 7B shapes by FLOPs).
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

import argparse, hashlib, json, os, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart_levers import SAMPLE, baseline_rows                      # noqa: E402
from mssl_workbench.cli.study import run_command                        # noqa: E402
from mssl_workbench.study.cells import Arm, Cell, Family, LaterBudget, Selection, Study, read_cell   # noqa: E402
from mssl_workbench.study.run import CellFailed, run_script, run_trained, script, shown, train_cmd    # noqa: E402
from mssl_workbench.study.schema import check_study, data_overrides, study_from_dict                 # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "study"
PAUSE = Path("/tmp/mssl-study.pause")

# The shared recipe: the quickstart's data, backbone, augmentation and precision; train_fit / train_holdout split
BACKBONE = ["model.backbone=resnet10t_mini_nopool", "model.backbone_kwargs={channels: [16, 32, 64, 128], stem_width: 8}",
            "model.small_input=false", "model.channels_last=true", "train.precision=auto"]
MONITOR = ["eval.monitor_samples=2000", "eval.knn_train_samples=8000", "train.quiet=true", "train.checkpoint_every=5"]

# Budgets: how many epochs of the 8,000 train_fit images every method sees (eval.every: monitor passes)
# (overrides, learning-rate factors of the seed-0 sweep, seeds); "toy" is the runner's own test: 1 lr, 1 seed, 2 steps
BUDGETS = {"e20": (["train.epochs=20", "eval.every=5"], (1.0, 0.5, 2.0), (0, 1, 2)),
           "toy": (["train.epochs=1", "train.max_steps=2", "eval.every=1", "eval.monitor_samples=256", "eval.knn_train_samples=512"],
                   (1.0,), (0,))}
TOY_EVAL = {"linear": ["epochs=1"], "selection": ["lidar_images=16", "lidar_views=2", "rankme_samples=256"]}   # the toy budget's evaluations
EXTRA_SEEDS = [3, 4]      # for Matrix-SSL and every row whose mean is within CLOSE of it
CLOSE = 0.03              # 3 points of test linear accuracy (last epoch)

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

# The second budget (item 5): 5× the steps (100 epochs) at each row's chosen rate of the 20-epoch sweep; (row, seeds)
LONG_ROWS = [("matrix_ssl", 3), ("simclr", 3), ("mec", 2), ("vicreg", 2), ("byol", 2), ("barlow_twins", 2)]
LONG = {"name": "long", "epochs": 100, "eval_every": 25}

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


def budget_entry(name: str, overrides: list[str]) -> dict:
    "A BUDGETS entry as a study file's budget: epochs, max_steps and eval_every by name, the other overrides as they are"
    named, out = {"train.epochs": "epochs", "train.max_steps": "max_steps", "eval.every": "eval_every"}, {"name": name, "overrides": []}
    for o in overrides:
        key, value = o.split("=", 1)
        if key in named: out[named[key]] = int(value)
        else: out["overrides"].append(o)
    return out


def study_dict(budget: str) -> dict:
    "The project's study file (as mssl-study reads one): the sample, the two arms, the budget and the long budget, the rules, the protocols"
    overrides, factors, seeds = BUDGETS[budget]
    extra = lambda key: TOY_EVAL.get(key, []) if budget == "toy" else []
    return {"name": "mssl-workbench", "data": {"dataset": "sample"},
            "methods": [{"name": r, "method": m, "overrides": e} for r, m, e in SSL_METHODS]
                       + [{"name": r, "method": m, "arm": "published", "overrides": e + PUBLISHED.get(r, [])} for r, m, e in SSL_METHODS if r in PUBLISHED_ROWS],
            "recipe": {"common": BACKBONE + MONITOR, "shared": ["data.augment=small"]},
            "budgets": [budget_entry(budget, overrides), {**LONG, "seeds": dict(LONG_ROWS)}],
            "rates": {"factors": list(factors), "max_extensions": 3},
            "seeds": {"base": list(seeds), "extra": EXTRA_SEEDS if len(seeds) >= 3 else [], "reference": "matrix_ssl", "close": CLOSE},
            "protocols": {"linear": {"preset": "fmnist-sample", "options": extra("linear")},
                          "knn": {"preset": "fmnist", "options": [f"root={SAMPLE}", *extra("knn")]},
                          "selection": {"preset": "fmnist", "options": [f"root={SAMPLE}", *extra("selection")]}},
            "output": str(OUT)}


# ------------------------------------------------------------------------------------------- the project's own families
BASELINES = ("raw-pixels", "random-init")


class Baseline(Family):
    "raw-pixels / random-init: k-NN and the fast-path linear head, trained on train_fit, read on train_holdout and test"
    name, minutes = "baseline", 0.5
    def cells(self, study, rows): return [Cell("baseline", b, study.budget.name, seeded=False) for b in BASELINES if rows is None or b in rows]
    def round(self, study, cell): return 0
    def key(self, study, cell): return {"budget": None}            # baselines do not train: one per study, whatever the budget
    def names(self, study): return list(BASELINES)

    def run(self, study, cell, workdir, env, *, resume=False):
        val = baseline_rows(["data.train_split=train_fit", "data.val_split=train_holdout"], workdir)[cell.method]
        test = baseline_rows(["data.train_split=train_fit", "data.val_split=test"], workdir)[cell.method]
        return {"val_knn": val["knn"], "val_linear": val["linear"], "knn": test["knn"], "linear": test["linear_last"],
                "linear_last": test["linear_last"], "linear_best": test["linear"], "erank": test.get("erank"), "note": test["note"],
                "command": "python benchmarks/study.py --family baseline (quickstart_levers.baseline_rows on train_fit → train_holdout, test)"}


MAE_METHODS = ("mae", "umae", "mmae")
# The masked-autoencoder rows: (row, method, overrides) — each method at its preset's λ, and M-MAE's and U-MAE's λ grids
# (M-MAE: the authors' effective 1.25e-3 and 3e-3 beside the preset's 1e-2; U-MAE: 3e-3 and 3e-2 around its 1e-2)
MAE_ROWS = [("mae", "mae", []), ("umae", "umae", []), ("mmae", "mmae", []),
            ("mmae-lamda1.25e-3", "mmae", ["model.options.lamda=0.00125"]), ("mmae-lamda3e-3", "mmae", ["model.options.lamda=0.003"]),
            ("umae-lamda3e-3", "umae", ["model.options.lamda=0.003"]), ("umae-lamda3e-2", "umae", ["model.options.lamda=0.03"])]


def without_select(study, cell, run_dir) -> dict:
    "The study's evaluations without RankMe/LiDAR: they are the two-view methods' criteria (the sweep's selection)"
    return {k: v for k, v in study.protocol_commands(run_dir).items() if k != "select"}


class Mae(Family):
    "A masked autoencoder on the ssl cells' images and epochs (its own ViT, augmentation and optimiser), at its preset's rate"
    name, minutes = "mae", 3.0
    def cell(self, study, row, seed):
        method, extra = next((m, e) for r, m, e in MAE_ROWS if r == row)
        over = data_overrides(study.sf.data) + MONITOR + study.budget.train_overrides + extra + [f"train.seed={seed}"]
        return Cell("mae", row, study.budget.name, seed, None, tuple(over), f"fmnist-{method}")
    def cells(self, study, rows): return [self.cell(study, m, s) for s in study.sf.seeds.base for m, *_ in MAE_ROWS if rows is None or m in rows]
    def round(self, study, cell): return 2 if cell.seed == 0 else 6
    def evals(self, study, cell, run_dir): return without_select(study, cell, run_dir)
    def names(self, study): return [r for r, *_ in MAE_ROWS]


LM_CONFIGS = [("ce", "lm-arith-ce", []), ("mce-embedding", "lm-arith-mce", []),
              ("mce-batch", "lm-arith-mce", ["loss.mce=batch"])]
# the second edition: the same configurations on held-out problems (the test problems kept out of training), 5 seeds
LM_GEN_CONFIGS = [("gen-ce", "lm-arith2-ce", []), ("gen-mce-embedding", "lm-arith2-mce", []),
                  ("gen-mce-batch", "lm-arith2-mce", ["loss.mce=batch"])]
LM_GEN_SEEDS = (0, 1, 2, 3, 4)
# what the held-out cells record beyond the first edition's: named in their key, so the cells computed without it re-run
LM_GEN_RECORDS = ("test_answer_ce", "train_answer_ce", "test_answer_ce_per_problem", "test_digit_ce", "train_digit_ce")


class Lm(Family):
    "CE against CE + MCE (both constructions) on the generated arithmetic tasks: exact match, answer CE, hidden erank"
    name, minutes = "lm", 3.0
    def runs(self, study) -> list[tuple[str, int]]:
        "(configuration, seed) of every lm cell: the first edition's at the budget's seeds, the held-out task's at LM_GEN_SEEDS"
        seeds = tuple(study.sf.seeds.base)
        gen_seeds = seeds if study.budget.name == "toy" else LM_GEN_SEEDS
        return [(n, s) for s in seeds for n, *_ in LM_CONFIGS] + [(n, s) for s in gen_seeds for n, *_ in LM_GEN_CONFIGS]
    def cell(self, study, name, seed):
        preset, extra = next((p, e) for n, p, e in LM_CONFIGS + LM_GEN_CONFIGS if n == name)
        toy = ["train.max_steps=2", "data.n_train=64", "data.n_test=8", "eval.monitor_batch=4"] if study.budget.name == "toy" else []
        return Cell("lm", name, study.budget.name, seed, None, tuple(extra + toy + [f"train.seed={seed}", "train.quiet=true"]), preset)
    def cells(self, study, rows): return [self.cell(study, n, s) for n, s in self.runs(study) if rows is None or n in rows]
    def round(self, study, cell): return 2 if cell.seed == 0 else 6
    def names(self, study): return [n for n, *_ in LM_CONFIGS + LM_GEN_CONFIGS]

    def key(self, study, cell):
        from mssl_workbench.cli.train import get_preset
        from mssl_workbench.config.schema import rename_keys
        from mssl_workbench.lm.config import LM_RENAMED
        # the preset hashed in the key names of the release that ran the committed cells (train.out_dir, optim.lr, loss.lamda,
        # loss.mu; LM_RENAMED inverted): the renames change no number, so they leave those cells done
        first_names = rename_keys(get_preset(cell.preset), {new: old for old, new in LM_RENAMED.items()}, notice=lambda line: None)
        return {"preset": first_names, "overrides": list(cell.overrides),
                **({"records": list(LM_GEN_RECORDS)} if cell.method.startswith("gen-") else {})}

    def run(self, study, cell, workdir, env, *, resume=False):
        "One language-model run of the preset (CE or CE + MCE); its summary: exact match on the test problems, CE, ranks"
        import tempfile
        run_dir = Path(tempfile.mkdtemp(prefix=f"{cell.name}-", dir=workdir)) / "run"
        tc = train_cmd("--preset", cell.preset, f"output={run_dir}", *cell.overrides)
        try: run_script(tc, env=env, cwd=study.cwd)
        except CellFailed as e:
            return {"failed": True, "exit": e.code, "failed_command": e.command, "error": e.message, "command": shown(tc)}
        s = json.loads((run_dir / "summary.json").read_text())
        keep = ("accuracy", "test_answer_ce", "train_answer_ce", "test_digit_ce", "train_digit_ce", "steps", "final_terms", "erank", "rankme", "diff_erank", "wall_s", "train_s")
        ev = s.get("eval") or {}
        return {**{k: s.get(k) for k in keep},
                **{k: ev.get(k) for k in ("no_prediction", "protocol", "test_answer_tokens", "test_digit_tokens", "test_answer_ce_per_problem")},
                **{k: (s.get("data") or {}).get(k) for k in ("test_answers_seen_in_train", "test_problems_seen_in_train")},
                "command": shown(tc)}

    def summary(self, r):
        held = f", test answer CE {r['test_answer_ce']:.3f} (digits {r['test_digit_ce']:.3f})" if r.get("test_answer_ce") is not None else ""
        return f"exact match {100 * r['accuracy']:.1f}%, CE {r['final_terms']['ce']:.3f}{held}, {r['wall_s']:.0f} s"


def script_hash(path: Path) -> str:
    "Hash of a benchmark script with its lines naming package modules left out: a move of the package's modules (the import"
    " lines) does not change what the script measures, so it does not make its cells stale"
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if "mssl_workbench" not in l]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class LmOverhead(Family):
    "benchmarks/lm_mce.py overhead: loss-only time and memory of CE + MCE against CE at its shapes, FLOPs at 7B"
    name, minutes, verifiable = "lm-overhead", 5.0, False
    def cells(self, study, rows): return [Cell("lm-overhead", "loss-overhead", study.budget.name, seeded=False)] if rows is None else []
    def round(self, study, cell): return 2
    def key(self, study, cell): return {"script": script_hash(ROOT / "benchmarks" / "lm_mce.py")}
    def run(self, study, cell, workdir, env, *, resume=False):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "lm_mce.py"), "overhead"] + (["--quick"] if cell.budget == "toy" else [])
        run_script(cmd, env=env, cwd=ROOT)
        return {**json.loads((ROOT / "benchmarks" / "results" / "lm_mce_overhead.json").read_text()), "command": " ".join(["python", *cmd[1:]])}
    def summary(self, r): return f"{r['wall_s']:.0f} s, load {r['load_start'][0]:.2f}/{r['load_end'][0]:.2f}"


# The protocols of the protocol cell: (key, mssl-eval arguments after the run directory)
PROTOCOLS = [("linear_fast", ["linear", "--preset", "fmnist-sample", "val_split=test"]),
             ("linear_official", ["linear", "--preset", "fmnist-fast", f"root={SAMPLE}", "augment=true"]),
             ("semisup_1pct", ["semisup", "--preset", "fmnist-1pct", f"root={SAMPLE}"]),
             ("semisup_10pct", ["semisup", "--preset", "fmnist-10pct", f"root={SAMPLE}"]),
             ("knn", ["knn", "--preset", "fmnist", f"root={SAMPLE}"])]
TOY_PROTOCOL = {"linear": ["epochs=1"], "semisup": ["epochs=1"]}


class Protocol(Family):
    "One quickstart run (train/test, seed 0) through every protocol the README lists"
    name, minutes = "protocol", 12.0
    def cells(self, study, rows):
        toy = ["train.max_steps=2", "train.epochs=1", "eval.every=1", "eval.monitor_samples=256", "eval.knn_train_samples=512"] if study.budget.name == "toy" else []
        return [Cell("protocol", "quickstart", study.budget.name, 0, None, tuple(["train.quiet=true", "train.seed=0"] + toy), "quickstart", seeded=False)] if rows is None else []
    def round(self, study, cell): return 2
    def evals(self, study, cell, run_dir):
        toy = TOY_PROTOCOL if cell.budget == "toy" else {}
        return {key: [args[0], run_dir, *args[1:], *toy.get(args[0], []), "--quiet"] for key, args in PROTOCOLS}
    def run(self, study, cell, workdir, env, *, resume=False):
        def row(cell, common, evals, s):
            evals = {k: {n: v for n, v in e.items() if not isinstance(v, (list, dict)) or n in ("ks", "options")} for k, e in evals.items()}
            return {**common, "protocols": evals, "monitor_knn": s.get("knn_acc")}
        return run_trained(study, cell, workdir, env, row)
    def summary(self, r): return f"{r['wall_s']:.0f} s, load {r['load_start'][0]:.2f}/{r['load_end'][0]:.2f}"


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
# The as-published arm's Barlow Twins collapses at the shared arm's chosen rate (erank 3-10, linear 47-71 %): one
# change at a time between the shared cell and the published one, and the published cell at 0.5x and 2x the rate
BARLOW_PUBLISHED_LEVERS = [
    ("barlow_twins-byolaug", "barlow_twins", ["data.augment=byol"],
     "the published arm's augmentation alone (the registry's BYOL views), λ = 0.005 as in the shared arm"),
    ("barlow_twins-lambd0.04", "barlow_twins", ["model.loss.lambd=0.04"],
     "the published arm's off-diagonal weight alone (λ = 0.04, scaled to 1,024-d), the shared augmentation"),
    ("barlow_twins-published-lr0.5x", "barlow_twins", ["data.augment=byol", "model.loss.lambd=0.04", "optim.base_lr=0.0015625"],
     "the published cell (BYOL views, λ = 0.04) at half the shared arm's chosen rate"),
    ("barlow_twins-published-lr2x", "barlow_twins", ["data.augment=byol", "model.loss.lambd=0.04", "optim.base_lr=0.00625"],
     "the published cell (BYOL views, λ = 0.04) at twice the shared arm's chosen rate"),
]
LEVERS += BARLOW_PUBLISHED_LEVERS
AT_CHOSEN_RATE = {n for n, b, *_ in LEVERS if b == "matrix_ssl"} | {n for n, *_ in BARLOW_PUBLISHED_LEVERS}
"Levers on the base row's chosen rate, not its preset's"
LEVER_MOVES = 0.01        # a lever that moves seed-0 validation linear accuracy this much gets a second seed
# Levers whose seed-0 cell moved a row past its baseline get a second seed (the base row's seed-1 cell + the overrides)
LEVER_SEEDS = {"matrix_ssl_paper-clip": (0, 1), "mmae-lamda1.25e-3": (0, 1), "barlow_twins-lastbn": (0, 1)}




class Lever(Family):
    "A lever: its base row's cell of that seed (ssl: at the preset rate, or the chosen one) with the lever's overrides"
    name, minutes = "lever", 2.5
    def cell(self, study, name, seed=0):
        "None until the base row's rate is chosen (levers at the chosen rate)"
        row, over = next((l[1], l[2]) for l in LEVERS if l[0] == name)
        ssl = study.families["ssl"]
        if row in MAE_METHODS: c = study.families["mae"].cell(study, row, seed)
        elif name in AT_CHOSEN_RATE:
            lr = study.chosen_lr("ssl", row)
            if lr is None: return None
            c = ssl.cell(study, row, lr, seed)
        else: c = ssl.cell(study, row, study.sweep("ssl", row, grow=False)[0], seed)
        return Cell("lever", name, study.budget.name, seed, None, tuple(list(c.overrides) + over), c.preset, seeded=seed > 0)

    def seeds(self, study, name) -> tuple[int, ...]:
        "Seed 0; a second seed where LEVER_SEEDS says, or (chosen-rate levers) once seed 0 moved validation accuracy ≥ LEVER_MOVES"
        if name not in AT_CHOSEN_RATE: return LEVER_SEEDS.get(name, (0,))
        c0, row = self.cell(study, name, 0), next(l[1] for l in LEVERS if l[0] == name)
        if c0 is None: return (0,)                                           # (no cell until the row's rate is chosen)
        base = study.families["ssl"].cell(study, row, study.chosen_lr("ssl", row), 0)
        mine, theirs = read_cell(c0.path(study.out)), read_cell(base.path(study.out))
        if not mine or not theirs or mine.get("failed") or theirs.get("failed"): return (0,)
        return (0, 1) if abs(mine["val_linear"] - theirs["val_linear"]) >= LEVER_MOVES else (0,)

    def cells(self, study, rows):
        cells = [self.cell(study, n, s) for n, *_ in LEVERS for s in self.seeds(study, n) if rows is None or n in rows]
        return [c for c in cells if c is not None]
    def round(self, study, cell): return 4 if cell.seed == 0 else 6
    def names(self, study): return [n for n, *_ in LEVERS]
    def waiting(self, study): return {n: (0,) for n, *_ in LEVERS if n in AT_CHOSEN_RATE and self.cell(study, n) is None}   # the plan: for the rate
    def evals(self, study, cell, run_dir):
        mae = cell.preset.startswith("fmnist-") and cell.preset[len("fmnist-"):] in MAE_METHODS
        return without_select(study, cell, run_dir) if mae else study.protocol_commands(run_dir)
    def run(self, study, cell, workdir, env, *, resume=False):
        row = super().run(study, cell, workdir, env)
        return {**row, **next({"base": b, "lever_overrides": o, "note": n} for l, b, o, n in LEVERS if l == cell.method)}


# -------------------------------------------------------------------------------------------------------------- the study
FAMILIES = ["baseline", "ssl", "mae", "lm", "lm-overhead", "protocol", "selection", "lever", "long", "published"]


def project_study(budget: str = "e20", out: Path = OUT) -> Study:
    "The project's study of a budget: the study file, the project's families in the order of its tables, results/study"
    sf = check_study(study_from_dict(study_dict(budget), base=ROOT))
    long, published = LaterBudget(sf.budgets[1]), Arm("published", "published", follow="ssl", order=(8, 8, 8))
    long.minutes, published.minutes = 10.0, 2.5
    selection = Selection(command="python benchmarks/study.py --family selection (mssl_workbench.cli.evaluate.selection_report over the sweep cells)")
    families = [Baseline(), Arm("ssl", "shared"), Mae(), Lm(), LmOverhead(), Protocol(), selection, Lever(), long, published]
    assert [f.name for f in families] == FAMILIES
    return Study(sf, out, families=families, tokens={str(SAMPLE): "SAMPLE"}, minutes=0.5 if budget == "toy" else None, marker=False, cwd=ROOT)


def commit(path: Path, message: str):
    "Commit one result file (only it: other staged changes stay staged); a failure is reported, not fatal"
    try:
        subprocess.run(["git", "add", str(path)], cwd=path.parent, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-q", "-m", message, "--", str(path)], cwd=path.parent, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"  (not committed: {getattr(e, 'stderr', b'').decode(errors='replace').strip() or e})", flush=True)


def table(study: Study) -> str:
    "The results chapter's tables (mssl_workbench.reports.results) of the committed cells"
    from mssl_workbench.reports import results as R
    cells = R.load_cells(study.out, study.budget.name)
    return "\n\n".join([R.ssl_table(R.ssl_summary(cells), R.baseline_summary(cells)), R.family_table(cells, "mae", R.MAE_COLUMNS),
                        R.family_table(R.lm_rows(cells), "lm", R.LM_COLUMNS), R.lm_answer_ce_table(cells), R.overhead_table(cells), R.protocol_table(cells),
                        R.selection_table(cells), R.lever_table(cells), R.orderings_table(cells)])


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
    ap.add_argument("--parallel", type=int, default=1, metavar="N", help="cells at once, each with cores // N threads")
    ap.add_argument("--verify", type=int, default=0, metavar="N",
                    help="re-run N done cells (of --family/--only) from scratch and compare every measured value with the committed one")
    args = ap.parse_args(argv)
    study = project_study(args.budget, Path(args.out))
    if not (args.dry_run or args.table):
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))   # the baselines compute here
    rc = run_command(study, families=args.family, rows=args.only, dry=args.dry_run, table=args.table, table_text=table,
                       verify_n=args.verify, parallel=args.parallel, rerun=args.rerun, max_minutes=args.max_minutes, workdir=args.workdir,
                       pause=None if args.ignore_pause else PAUSE, on_written=commit if args.commit else None, log=lambda s: print(s, flush=True))
    plan = Path(args.out) / "plan.json"               # rewritten when the run stops: the seeds its cells decided
    changed = lambda p: subprocess.run(["git", "status", "--porcelain", "--", str(p)], cwd=p.parent, capture_output=True, text=True).stdout.strip()
    if args.commit and plan.exists() and not (args.dry_run or args.table) and changed(plan): commit(plan, f"study {args.budget}: the plan")
    return rc


if __name__ == "__main__":
    sys.exit(main())
