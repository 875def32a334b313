"""A reproducible probe of every entry point, as a new user (or a CI job) would try them: issue 30's acceptance check.

Run it from the repository root, under the test lock and at one thread (it starts a few hundred console-script processes):

    flock /tmp/mssl-test.lock env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tools/probe.py [--only SUBSTR ...] [--keep]

What it does:

1. makes a few tiny real artefacts once, in a temporary folder, with the real console scripts (`base/`): a quickstart
   run (4 steps), a quickstart run stopped by `train.max_steps`, a tiny LM run of the `lm-arith-ce` preset, an
   ImageNet-layout folder (and one with undecodable files) generated as the tests do, a run of the ImageNet preset on
   it, a run of torchvision's resnet18 layout, a synthetic COCO folder, a synthetic spectrum run and a study file;
2. runs every case (`CASES`, more than 100) in a folder of its own (`cases/<name>/`): its setup copies what it needs
   from `base/` and writes any damaged file, then the command runs through the installed console scripts (subprocess,
   no stdin, `CI=1`, a timeout, a feature cache of the probe's own) — the dashboard, which has no command, through
   `python tools/probe.py --dashboard ROOT`, the reader a notebook's `Dashboard(ROOT)` runs;
3. classifies each case automatically, the first that applies:
   - **hang**: the timeout passed;
   - **traceback**: 'Traceback' in stdout or stderr;
   - **lost**: a file or folder that existed before the command (in the case's folder or in `base/`; sha256 of
     every file) changed or vanished, and the case did not declare it as one the command writes;
   - **silent**: exit 0 where an error was expected, or exit 0 and the case's check of the output failed;
   - **unclear**: any other non-zero exit where success was expected; an error that is not exit 2 with its last stderr
     line naming the fix (holding the case's words; argparse's usage lines and at most two notes before it, never the
     same line twice); a refusal that left new files;
   - **clear error** / **correct success** otherwise;
4. prints the table and writes `results/probe/probe.json` (every case: class, command, expectation, outcome, exit
   code, last stderr line, notes) and `results/probe/README.md` (the count table, the command, the load average at
   the start and the end).

A case's class is the issue's (1: a run mixed into another; 2: generators that overwrite; 3: a finished run
rewritten; 4: protocols that do not read the run as trained; 5: options that change meaning silently; 6: signals;
7: tracebacks and unclear errors at the edges) or 'new' for a kind of fault the issue does not name.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "results" / "probe"

# the tiny real runs (as tests/console.py's QUICK and LM_TINY)
QUICK = ["--preset", "quickstart", "--quiet", "data.fraction=0.03", "train.epochs=1", "train.batch_size=64",
         "eval.monitor_samples=128", "eval.knn_train_samples=128", "eval.probe=false", "eval.final_linear=false"]
LM_TINY = ["--preset", "lm-arith-ce", "--quiet", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=80",
           "data.n_train=64", "data.n_test=6", "train.max_steps=4", "train.batch_size=8", "train.log_every=1",
           "train.checkpoint_every_steps=2", "eval.max_new_tokens=8", "eval.monitor_batch=6"]
INET = ["--preset", "imagenet-matrixssl-r50-100ep", "--quiet", "model.backbone=resnet10t_mini", "data.image_size=32",
        "data.num_workers=0", "model.proj_dim=32", "model.proj_hidden=64", "model.pred_hidden=16", "train.epochs=1",
        "train.batch_size=8", "eval.monitor_samples=16", "eval.knn_train_samples=32", "eval.knn_k=5"]
R18 = ["--preset", "fmnist-simclr", "--quiet", "model.backbone=resnet18", "data.in_chans=3", "data.fraction=0.01", "train.epochs=1", "train.max_steps=1",
       "train.batch_size=16", "model.proj_dim=16", "model.proj_hidden=32", "eval.monitor_samples=16", "eval.knn_train_samples=32",
       "eval.knn_k=5", "eval.probe=false", "eval.final_linear=false", "eval.info_samples=0"]
CHEAP_EVAL = ["device=cpu", "--quiet"]


# ---------------------------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    cls: str                          # "1".."7" (issue 30's classes) or "new"
    argv: Callable                    # (w, b) -> [console script, *args]; "dashboard" runs the dashboard's reader
    expect: str = "error"             # "error" (exit 2, one line) or "ok"
    words: tuple = ()                 # an error's line must hold each of these
    check: Callable | None = None     # ok: (result, w, b) -> None when right, else what is wrong
    setup: Callable | None = None     # (w, b) -> None: copies and damage, before the digest
    writes: tuple = ()                # globs (relative to the case folder) the command may create or change
    cwd: str | None = None            # relative to the case folder
    env: dict = field(default_factory=dict)
    timeout: float = 300
    sig: tuple | None = None          # (signal, file relative to w whose first line means "started", seconds after)
    code: int = 2                     # an expected error's exit code


def cp(src: Path, dst: Path) -> Path:
    "A copy of a run or folder of base/ (a case never works on base/ itself)"
    return Path(shutil.copytree(src, dst)) if src.is_dir() else Path(shutil.copy2(src, dst))


def jl(path: Path) -> list:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def jread(path: Path):
    return json.loads(path.read_text())


def write(path: Path, data, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def ckpt_of(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*.pt"))[-1]


def expect_stdout(*needles):
    "A check: every needle in stdout"
    return lambda r, w, b: None if all(n in r.stdout for n in needles) else f"stdout lacks {[n for n in needles if n not in r.stdout]}"


def study_yaml(tree: Path, **extra) -> str:
    import yaml
    d = {"name": "toy", "output": "out",
         "data": {"dataset": "imagefolder", "root": str(tree), "test_split": "test", "image_size": 32, "in_chans": 3},
         "methods": [{"name": "simclr"}, {"name": "matrix_ssl"}],
         "recipe": {"common": ["model.backbone=resnet10t_mini", "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 4}",
                               "train.batch_size=16", "eval.monitor_samples=16", "eval.knn_train_samples=32", "eval.info_samples=16"]},
         "budgets": [{"name": "b1", "epochs": 1, "max_steps": 2, "eval_every": 1}],
         "rates": {"factors": [1.0]}, "seeds": {"base": [0]},
         "protocols": {"linear": {"preset": "fmnist-sample", "options": ["epochs=1"]}, "knn": {"options": ["ks=[5]"]}}}
    for k, v in extra.items():
        if v is None: d.pop(k, None)
        else: d[k] = v
    return yaml.safe_dump(d, sort_keys=False)


def damage_lines(path: Path, fn):
    rows = jl(path)
    path.write_text("".join(json.dumps(fn(r)) + "\n" for r in rows))


def knn_ok(n_train, n_val, name="run"):
    def check(r, w, b):
        out = jread(w / name / "eval" / "knn.json")
        if (out.get("n_train"), out.get("n_val")) != (n_train, n_val): return f"knn.json counts {(out.get('n_train'), out.get('n_val'))}"
        acc = [v for k, v in out.items() if "acc" in k or "top1" in k]
        flat = json.dumps(out)
        if '"NaN"' in flat or "NaN" in flat: return "a NaN in knn.json"
        return None
    return check


def cases() -> list[Case]:
    C = []
    add = lambda *a, **k: C.append(Case(*a, **k))
    T = "mssl-train"; E = "mssl-eval"; S = "mssl-spectrum"; Y = "mssl-study"

    # ---- 1. a run mixed into another ---------------------------------------------------------------------------------
    add("resume-a-into-lm-run", "1", lambda w, b: [T, *QUICK, "--resume", ckpt_of(b.quick), "--output", w / "B"],
        setup=lambda w, b: cp(b.lm, w / "B"), words=("--output",))
    add("resume-a-into-other-image-run", "1", lambda w, b: [T, *QUICK, "train.max_steps=6", "--resume", ckpt_of(b.qmax), "--output", w / "B"],
        setup=lambda w, b: cp(b.inet, w / "B"), words=("--output",))
    add("output-ckpt-folder-user-file", "1", lambda w, b: [T, *QUICK, "--output", w / "U"],
        setup=lambda w, b: write(w / "U" / "checkpoints" / "step_00000004.pt", b"user bytes"), words=("was not written by a run",))
    add("output-user-metrics-file", "1", lambda w, b: [T, *QUICK, "--output", w / "U"],
        setup=lambda w, b: write(w / "U" / "metrics.jsonl", '{"mine": 1}\n'), words=("--output",))
    add("output-user-config-yaml", "new", lambda w, b: [T, *QUICK, "--output", w / "U"],
        setup=lambda w, b: write(w / "U" / "config.yaml", "my: settings\n"), words=("--output",))
    add("output-is-a-data-tree", "new", lambda w, b: [T, *QUICK, "--output", w / "tree"], expect="ok",    # nothing there is written over
        setup=lambda w, b: cp(b.tree, w / "tree"), writes=("tree/*.jsonl", "tree/*.json", "tree/config.yaml", "tree/checkpoints", "tree/checkpoints/*",
                                                             "tree/tb", "tree/tb/*", "tree/eval", "tree/eval/*"),
        check=lambda r, w, b: None if jread(w / "tree" / "summary.json").get("steps") == 4 else "summary")
    add("lm-output-holds-image-run", "1", lambda w, b: [T, *LM_TINY, "--output", w / "B"],
        setup=lambda w, b: cp(b.quick, w / "B"), words=("already holds a run",))
    add("lm-resume-image-ckpt", "1", lambda w, b: [T, *LM_TINY, "--resume", ckpt_of(b.quick), "--output", w / "N"],
        words=("cannot resume",))
    add("image-resume-lm-ckpt", "1", lambda w, b: [T, *QUICK, "--resume", ckpt_of(b.lm), "--output", w / "N"],
        words=("cannot resume",))
    add("resume-auto-into-other-run-different-preset", "1", lambda w, b: [T, *INET, f"data.root={b.tree}", "--resume", "auto", "--output", w / "B"],
        setup=lambda w, b: cp(b.quick, w / "B"), words=("cannot resume",))
    add("output-is-a-file", "7", lambda w, b: [T, *QUICK, "--output", w / "f"],
        setup=lambda w, b: write(w / "f", "x"), words=("is a file",))
    add("config-of-other-run-output-another-run", "1", lambda w, b: [T, "--config", w / "A" / "config.yaml", "--output", w / "B"],
        setup=lambda w, b: (cp(b.quick, w / "A"), cp(b.qmax, w / "B")), words=("already holds a run",))
    add("resume-dir-of-other-run", "1", lambda w, b: [T, *QUICK, "train.max_steps=6", "--resume", w / "A", "--output", w / "B"],
        setup=lambda w, b: (cp(b.qmax, w / "A"), cp(b.quick, w / "B")), words=("--output",))
    add("resume-ckpt-into-fresh-output", "1", lambda w, b: [T, *QUICK, "train.max_steps=3", "--resume", ckpt_of(b.qmax), "--output", w / "F"],
        expect="ok", writes=("F", "F/**"),
        check=lambda r, w, b: None if jread(w / "F" / "summary.json").get("steps") == 3 and
        jread(w / "F" / "summary.json") is not None and (w / "F" / "config.yaml").read_text().count("run_id") == 1 and
        "run_id: " + __import__("yaml").safe_load((b.qmax / "config.yaml").read_text())["run_id"] not in (w / "F" / "config.yaml").read_text()
        else "F's summary/run_id wrong")
    add("eval-output-into-other-run", "1", lambda w, b: [E, "knn", w / "run", "ks=[5]", "--output", w / "other" / "eval" / "knn.json", *CHEAP_EVAL],
        setup=lambda w, b: (cp(b.inet, w / "run"), cp(b.quick, w / "other")), words=("--output",))

    # ---- 2. generators that overwrite ---------------------------------------------------------------------------------
    add("synthetic-coco-over-coco", "2", lambda w, b: [E, "make-synthetic-coco", w / "coco", "--val", "3", "--size", "64"],
        setup=lambda w, b: cp(b.coco, w / "coco"), words=("exists and is not empty",))
    add("synthetic-coco-over-file", "2", lambda w, b: [E, "make-synthetic-coco", w / "f", "--val", "1"],
        setup=lambda w, b: write(w / "f", "x"), words=("f",))
    add("synthetic-coco-over-run", "2", lambda w, b: [E, "make-synthetic-coco", w / "run", "--val", "1"],
        setup=lambda w, b: cp(b.quick, w / "run"), words=("exists and is not empty",))
    add("synthetic-coco-under-file", "2", lambda w, b: [E, "make-synthetic-coco", w / "f" / "coco", "--val", "1"],
        setup=lambda w, b: write(w / "f", "x"), words=("f",))
    add("synthetic-coco-zero-images", "5", lambda w, b: [E, "make-synthetic-coco", w / "c", "--train", "0", "--val", "0"], words=())
    add("synthetic-coco-new", "2", lambda w, b: [E, "make-synthetic-coco", w / "c", "--train", "1", "--val", "2", "--size", "64"],
        expect="ok", writes=("c", "c/**"),
        check=lambda r, w, b: None if len(jread(w / "c" / "annotations" / "instances_val2017.json")["images"]) == 2 else "not 2 val images")
    add("study-init-over-study", "2", lambda w, b: [Y, "init", w / "study.yaml"],
        setup=lambda w, b: write(w / "study.yaml", study_yaml(b.tree)), words=("study.yaml",))
    add("study-init-over-user-file", "2", lambda w, b: [Y, "init", w / "notes.txt"],
        setup=lambda w, b: write(w / "notes.txt", "my notes"), words=("notes.txt",))
    add("study-init-under-file", "2", lambda w, b: [Y, "init", w / "f" / "s.yaml"],
        setup=lambda w, b: write(w / "f", "x"), words=("f",))
    add("study-init-new", "2", lambda w, b: [Y, "init", w / "s.yaml", "--name", "probe"], expect="ok", writes=("s.yaml",),
        check=lambda r, w, b: None if __import__("yaml").safe_load((w / "s.yaml").read_text())["name"] == "probe" else "name not written")
    add("study-init-data-missing", "new", lambda w, b: [Y, "init", w / "s.yaml", "--data", w / "nope"], words=("nope",))
    add("spectrum-o-over-config", "2", lambda w, b: [S, w / "run", "-o", w / "run" / "config.yaml"],
        setup=lambda w, b: cp(b.quick, w / "run"), words=("--overwrite",))
    add("spectrum-default-over-user-file", "2", lambda w, b: [S, w / "run"], cwd=".",
        setup=lambda w, b: (cp(b.quick, w / "run"), write(w / "spectrum-report.html", "<p>mine</p>")), words=("--overwrite",))
    add("spectrum-new-report", "2", lambda w, b: [S, w / "run", "-o", w / "r.html"], expect="ok", writes=("r.html",),
        setup=lambda w, b: cp(b.quick, w / "run"),
        check=lambda r, w, b: None if __import__("mssl_workbench.reports.spectrum", fromlist=["x"]).is_spectrum_report(w / "r.html") else "not a report")
    add("gsm8k-out-over-user-file", "2", lambda w, b: [E, "gsm8k", w / "lm", b.qa, "--out", w / "notes.jsonl"],
        setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "notes.jsonl", '{"mine": 1}\n')), words=("--overwrite",))
    add("export-d2-o-over-user-file", "2", lambda w, b: [E, "export-detectron2", w / "r18", "-o", w / "mine.pkl"],
        setup=lambda w, b: (cp(b.r18, w / "r18"), write(w / "mine.pkl", b"mine")), words=("--overwrite",))
    add("export-d2-new", "2", lambda w, b: [E, "export-detectron2", w / "r18", "-o", w / "d2.pkl"], expect="ok",
        setup=lambda w, b: cp(b.r18, w / "r18"), writes=("d2.pkl", "r18/eval/*"),
        check=lambda r, w, b: d2_check(w / "d2.pkl", w / "r18"))
    add("knn-output-over-user-file", "2", lambda w, b: [E, "knn", w / "run", "ks=[5]", "--output", w / "mine.json", *CHEAP_EVAL],
        setup=lambda w, b: (cp(b.inet, w / "run"), write(w / "mine.json", '{"mine": 1}')), words=("--overwrite",))
    add("study-report-over-user-file", "2", lambda w, b: [Y, "report", w / "study.yaml", "--output", w / "mine.html"],
        setup=lambda w, b: (write(w / "study.yaml", study_yaml(b.tree)), write(w / "mine.html", "<p>mine</p>")), words=("--overwrite",))
    add("coco-score-output-over-user-file", "2", lambda w, b: [E, "coco-score", "--gt", w / "gt.json", "--detections", w / "det.json",
                                                             "--output", w / "mine.json"],
        setup=lambda w, b: (coco_pair(b, w), write(w / "mine.json", '{"mine": 1}')), words=("--overwrite",))

    # ---- 3. a finished run rewritten ----------------------------------------------------------------------------------
    fin = "run already finished"
    add("finished-image-resume-auto", "3", lambda w, b: [T, *QUICK, "--resume", "auto", "--output", w / "run"], expect="ok",
        setup=lambda w, b: cp(b.quick, w / "run"), check=expect_stdout(fin))
    add("finished-image-resume-ckpt", "3", lambda w, b: [T, *QUICK, "--resume", ckpt_of(w / "run"), "--output", w / "run"], expect="ok",
        setup=lambda w, b: cp(b.quick, w / "run"), check=expect_stdout(fin))
    add("finished-maxsteps-resume-auto", "3", lambda w, b: [T, *QUICK, "train.max_steps=2", "--resume", "auto", "--output", w / "run"],
        expect="ok", setup=lambda w, b: cp(b.qmax, w / "run"), check=expect_stdout(fin))
    add("finished-lm-resume-auto", "3", lambda w, b: [T, *LM_TINY, "--resume", "auto", "--output", w / "run"], expect="ok",
        setup=lambda w, b: cp(b.lm, w / "run"), check=expect_stdout(fin))
    add("finished-lm-resume-ckpt", "3", lambda w, b: [T, *LM_TINY, "--resume", w / "run" / "checkpoints" / "step_00000004.pt", "--output", w / "run"],
        expect="ok", setup=lambda w, b: cp(b.lm, w / "run"), check=expect_stdout(fin))
    add("finished-inet-resume-auto", "3", lambda w, b: [T, *INET, f"data.root={b.tree}", "--resume", "auto", "--output", w / "run"], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), check=expect_stdout(fin))
    add("finished-config-yaml-resume-auto", "3", lambda w, b: [T, "--config", w / "run" / "config.yaml", "--resume", "auto", "--output", w / "run"],
        expect="ok", setup=lambda w, b: cp(b.quick, w / "run"), check=expect_stdout(fin))
    add("finished-resume-auto-dry-run", "3", lambda w, b: [T, *QUICK, "--resume", "auto", "--output", w / "run", "--dry-run"], expect="ok",
        setup=lambda w, b: cp(b.quick, w / "run"), check=expect_stdout("preset: quickstart"))
    add("finished-resume-changed-lr", "3", lambda w, b: [T, *QUICK, "optim.base_lr=0.5", "--resume", "auto", "--output", w / "run"],
        expect="ok", setup=lambda w, b: cp(b.quick, w / "run"), check=expect_stdout(fin))
    add("finished-lm-larger-max-steps", "3", lambda w, b: [T, *[a for a in LM_TINY if a != "train.max_steps=4"], "train.max_steps=5",
                                                         "--resume", "auto", "--output", w / "run"], expect="ok",
        setup=lambda w, b: cp(b.lm, w / "run"), writes=("run/*.jsonl", "run/summary.json", "run/checkpoints/*", "run/eval/*", "run/config.yaml", "run/tb/*"),
        check=lambda r, w, b: None if jread(w / "run" / "summary.json").get("steps") == 5 and
        [m["step"] for m in jl(w / "run" / "metrics.jsonl")] == [1, 2, 3, 4, 5] else "steps/metrics wrong")

    # ---- 4. protocols that read the run as trained --------------------------------------------------------------------
    add("knn-inet-own-root", "4", lambda w, b: ["mssl-eval", "knn", w / "run", "ks=[5]", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/knn.json",), check=knn_ok(32, 12))
    add("knn-inet-ckpt-file", "4", lambda w, b: ["mssl-eval", "knn", ckpt_of(w / "run"), "ks=[5]", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/knn.json",), check=knn_ok(32, 12))
    add("knn-broken-tree-skips", "4", lambda w, b: [E, "knn", w / "run", f"root={b.broken}", "ks=[5]", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/knn.json",),
        check=lambda r, w, b: knn_ok(32, 12)(r, w, b) or (None if len(jread(w / "run" / "eval" / "knn.json")["skipped_files"]) == 2 else "skipped"))
    add("linear-inet", "4", lambda w, b: [E, "linear", w / "run", "epochs=1", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/linear.json",),
        check=lambda r, w, b: None if (jread(w / "run" / "eval" / "linear.json").get("n_train"), jread(w / "run" / "eval" / "linear.json").get("n_val")) == (32, 12) else "counts")
    add("semisup-inet", "4", lambda w, b: [E, "semisup", w / "run", "--percent", "10", "epochs=1", "batch_size=8", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/semisup-10pct.json", "run/eval/semisup-10pct.partial", "run/eval/semisup-10pct.partial/**"),
        check=lambda r, w, b: None if jread(w / "run" / "eval" / "semisup-10pct.json").get("n_val") == 12 else "n_val")
    add("finetune-inet", "4", lambda w, b: [E, "finetune", w / "run", "epochs=1", "max_steps=1", "batch_size=8", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/finetune.json", "run/eval/finetune.partial", "run/eval/finetune.partial/**"),
        check=lambda r, w, b: None if jread(w / "run" / "eval" / "finetune.json").get("backbone") == "resnet10t_mini" else "backbone")
    add("finetune-quick-kwargs", "4", lambda w, b: [E, "finetune", w / "run", f"root={b.sample}", "max_steps=1", "epochs=1", "train_fraction=0.02",
                                                   "val_fraction=0.02", "batch_size=16", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.quick, w / "run"), writes=("run/eval/finetune.json", "run/eval/finetune.partial", "run/eval/finetune.partial/**"),
        check=lambda r, w, b: None if jread(w / "run" / "eval" / "finetune.json").get("backbone") == "resnet10t_mini_nopool" else "backbone")
    add("select-inet", "4", lambda w, b: [E, "select", w / "run", "rankme_samples=16", "lidar_images=8", "lidar_views=2", "device=cpu", "--quiet"],
        expect="ok", setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/select.json",),
        check=lambda r, w, b: None if "rankme" in json.dumps(jread(w / "run" / "eval" / "select.json")).lower() else "no rankme")
    add("select-inet-and-lm-skips-lm", "4", lambda w, b: [E, "select", w / "run", w / "lm", "rankme_samples=16", "lidar_images=8", "lidar_views=2",
                                                         "device=cpu", "--quiet"], expect="ok",
        setup=lambda w, b: (cp(b.inet, w / "run"), cp(b.lm, w / "lm")), writes=("run/eval/select.json",),
        check=lambda r, w, b: None if "skipping" in r.stderr else "no skip note")
    add("gsm8k-lm-run", "4", lambda w, b: [E, "gsm8k", w / "lm", b.qa], expect="ok", setup=lambda w, b: cp(b.lm, w / "lm"),
        writes=("lm/eval/gsm8k.json", "lm/eval/generations_qa.jsonl"),
        check=lambda r, w, b: None if jread(w / "lm" / "eval" / "gsm8k.json").get("n") == 3 and
        jread(w / "lm" / "eval" / "gsm8k.json").get("checkpoint", "").endswith("step_00000004.pt") else "n/checkpoint")
    add("gsm8k-lm-older-ckpt", "4", lambda w, b: [E, "gsm8k", w / "lm" / "checkpoints" / "step_00000002.pt", b.qa], expect="ok",
        setup=lambda w, b: cp(b.lm, w / "lm"), writes=("lm/eval/gsm8k.json", "lm/eval/generations_qa.jsonl"),
        check=lambda r, w, b: None if jread(w / "lm" / "eval" / "gsm8k.json").get("checkpoint", "").endswith("step_00000002.pt") else "ckpt")
    add("gsm8k-dry-run-own-run", "4", lambda w, b: [E, "gsm8k", w / "lm", "--dry-run"], expect="ok", setup=lambda w, b: cp(b.lm, w / "lm"),
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout).get("max_new_tokens") == 8 else "max_new_tokens")
    add("gsm8k-on-image-run", "4", lambda w, b: [E, "gsm8k", w / "run", b.qa], setup=lambda w, b: cp(b.quick, w / "run"), words=("mssl-eval knn",))
    add("knn-on-lm-run", "4", lambda w, b: [E, "knn", w / "lm"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("mssl-eval gsm8k",))
    add("linear-on-lm-ckpt", "4", lambda w, b: [E, "linear", ckpt_of(w / "lm")], setup=lambda w, b: cp(b.lm, w / "lm"), words=("mssl-eval gsm8k",))
    add("finetune-on-lm-run", "4", lambda w, b: [E, "finetune", w / "lm"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("mssl-eval gsm8k",))
    add("semisup-on-lm-run", "4", lambda w, b: [E, "semisup", w / "lm"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("mssl-eval gsm8k",))
    add("coco-on-lm-run", "4", lambda w, b: [E, "coco", w / "lm", "--data", b.coco], setup=lambda w, b: cp(b.lm, w / "lm"), words=("mssl-eval gsm8k",))
    add("spectrum-on-lm-run", "4", lambda w, b: [S, w / "lm", "-o", w / "r.html"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("language-model",))
    add("export-d2-quick", "4", lambda w, b: [E, "export-detectron2", w / "run", "-o", w / "d2.pkl"], setup=lambda w, b: cp(b.quick, w / "run"),
        words=("resnet50",))
    add("coco-quick-refused", "4", lambda w, b: [E, "coco", w / "run", "--data", b.coco], setup=lambda w, b: cp(b.quick, w / "run"), words=("resnet50",))
    add("knn-run-without-config", "4", lambda w, b: [E, "knn", w / "run", "ks=[5]", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: (cp(b.inet, w / "run"), (w / "run" / "config.yaml").unlink()), writes=("run/eval/knn.json",), check=knn_ok(32, 12))
    add("knn-loose-ckpt", "4", lambda w, b: [E, "knn", w / "loose.pt", "ks=[5]", "--output", w / "k.json", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: shutil.copy2(ckpt_of(b.inet), w / "loose.pt"), writes=("k.json", "eval", "eval/knn.json"),   # eval/ next to it, as documented
        check=lambda r, w, b: None if (jread(w / "k.json").get("n_train"), jread(w / "k.json").get("n_val")) == (32, 12) else "counts")
    add("knn-preset-fmnist-on-inet", "5", lambda w, b: [E, "knn", w / "run", "--preset", "fmnist", "ks=[5]"],
        setup=lambda w, b: cp(b.inet, w / "run"), words=("data.root",))
    add("knn-reads-checkpoint-config", "4", lambda w, b: [E, "knn", w / "run", "ks=[5]", *CHEAP_EVAL], expect="ok",   # an edited config.yaml
        setup=lambda w, b: cp(b.inet, w / "run") and retarget(w / "run", w / "gone"), writes=("run/eval/knn.json",),      # is not the run as trained
        check=lambda r, w, b: knn_ok(32, 12)(r, w, b) or (None if jread(w / "run" / "eval" / "knn.json")["data_source"] == str(b.tree / "train") else "source"))
    add("knn-root-missing", "4", lambda w, b: [E, "knn", w / "run", f"root={w / 'gone'}", "ks=[5]", *CHEAP_EVAL],
        setup=lambda w, b: cp(b.inet, w / "run"), words=("gone",))

    # ---- 5. options that change meaning silently ----------------------------------------------------------------------
    add("knn-k-0", "5", lambda w, b: [E, "knn", w / "run", "ks=[0]"], setup=lambda w, b: cp(b.inet, w / "run"), words=("ks",))
    add("knn-k-too-large", "5", lambda w, b: [E, "knn", w / "run", "ks=[5,1000]", *CHEAP_EVAL], setup=lambda w, b: cp(b.inet, w / "run"),
        words=("larger than the k-NN memory bank",))
    add("knn-temperature-0", "5", lambda w, b: [E, "knn", w / "run", "temperature=0"], setup=lambda w, b: cp(b.inet, w / "run"), words=("temperature",))
    add("knn-unknown-option", "5", lambda w, b: [E, "knn", w / "run", "kss=[5]"], setup=lambda w, b: cp(b.inet, w / "run"), words=("kss",))
    add("knn-ks-string", "5", lambda w, b: [E, "knn", w / "run", "ks=five"], setup=lambda w, b: cp(b.inet, w / "run"), words=("ks",))
    add("linear-epochs-0", "5", lambda w, b: [E, "linear", w / "run", "epochs=0"], setup=lambda w, b: cp(b.inet, w / "run"), words=("epochs",))
    add("linear-batch-0", "5", lambda w, b: [E, "linear", w / "run", "batch_size=0"], setup=lambda w, b: cp(b.inet, w / "run"), words=("batch_size",))
    add("linear-lr-negative", "5", lambda w, b: [E, "linear", w / "run", "lr=-1"], setup=lambda w, b: cp(b.inet, w / "run"), words=("lr",))
    add("linear-unknown-preset", "5", lambda w, b: [E, "linear", w / "run", "--preset", "nope"], setup=lambda w, b: cp(b.inet, w / "run"), words=("nope",))
    add("linear-val-split-unknown", "5", lambda w, b: [E, "linear", w / "run", "val_split=nope", *CHEAP_EVAL],
        setup=lambda w, b: cp(b.inet, w / "run"), words=("nope",))
    add("linear-dry-run", "5", lambda w, b: [E, "linear", w / "run", "epochs=3", "--dry-run"], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["options"].get("epochs") == 3 else "epochs")
    add("semisup-percent-5", "5", lambda w, b: [E, "semisup", w / "run", "--percent", "5", "epochs=1", "batch_size=8", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/semisup-5pct.json", "run/eval/semisup-5pct.partial", "run/eval/semisup-5pct.partial/**"),
        check=lambda r, w, b: None if jread(w / "run" / "eval" / "semisup-5pct.json").get("n_val") == 12 else "n_val")
    add("semisup-percent-abc", "5", lambda w, b: [E, "semisup", w / "run", "--percent", "abc"], setup=lambda w, b: cp(b.inet, w / "run"), words=("percent",))
    add("finetune-drop-path-2", "5", lambda w, b: [E, "finetune", w / "run", "drop_path=2"], setup=lambda w, b: cp(b.inet, w / "run"), words=("drop_path",))
    add("select-rankme-0", "5", lambda w, b: [E, "select", w / "run", "rankme_samples=0"], setup=lambda w, b: cp(b.inet, w / "run"), words=("rankme_samples",))
    add("train-knn-k-over-bank", "5", lambda w, b: [T, *QUICK, "eval.knn_k=500", "--output", w / "N"], words=("eval.knn_k",))
    add("train-backbone-override-notice", "5", lambda w, b: [T, "--preset", "quickstart", "model.backbone=resnet18", "--dry-run"], expect="ok",
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["model"]["backbone_kwargs"] == {} and "dropped" in r.stderr else "kwargs kept")
    add("train-backbone-kwargs-empty-override", "5", lambda w, b: [T, "--preset", "quickstart", "model.backbone_kwargs={}", "--dry-run"], expect="ok",
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["model"]["backbone_kwargs"] == {} else "kwargs kept")
    add("train-config-backbone-kwargs-empty", "5", lambda w, b: [T, "--preset", "quickstart", "--config", w / "c.yaml", "--dry-run"], expect="ok",
        setup=lambda w, b: write(w / "c.yaml", "model:\n  backbone_kwargs: {}\n"),
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["model"]["backbone_kwargs"] == {} else "--config's {} kept the preset's kwargs")
    add("train-config-backbone-other", "5", lambda w, b: [T, "--preset", "quickstart", "--config", w / "c.yaml", "--dry-run"], expect="ok",
        setup=lambda w, b: write(w / "c.yaml", "model:\n  backbone: resnet18\n"),
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["model"]["backbone_kwargs"] == {} and "dropped" in r.stderr else "kwargs kept")
    add("train-slurm-no-sbatch", "5", lambda w, b: [T, *QUICK, "--slurm", "nodes=1,time=10", "--output", w / "N"],
        env={"PATH": str(Path(os.__file__).parent)}, words=("--slurm",))
    add("train-slurm-bad-key", "5", lambda w, b: [T, *QUICK, "--slurm", "nodez=1", "--output", w / "N"], words=("nodez",))
    add("coco-score-run-missing", "5", lambda w, b: [E, "coco-score", "--gt", w / "gt.json", "--detections", w / "det.json", "--run", w / "missing"],
        setup=lambda w, b: coco_pair(b, w), words=("--run",))
    add("coco-score-perfect", "5", lambda w, b: [E, "coco-score", "--gt", w / "gt.json", "--detections", w / "det.json", "--output", w / "s.json"],
        expect="ok", setup=lambda w, b: coco_pair(b, w), writes=("s.json",),
        check=lambda r, w, b: None if abs(jread(w / "s.json")["scores"]["bbox"]["AP"] - 1.0) < 1e-9
        else f"perfect detections scored {jread(w / 's.json')['scores']}")
    add("train-fraction-0", "5", lambda w, b: [T, *QUICK, "data.fraction=0", "--output", w / "N"], words=("data.fraction",))
    add("train-fraction-1.5", "5", lambda w, b: [T, *QUICK, "data.fraction=1.5", "--output", w / "N"], words=("data.fraction",))
    add("train-epochs-0", "5", lambda w, b: [T, *QUICK, "train.epochs=0", "--output", w / "N"], words=("train.epochs",))
    add("train-max-steps-0", "5", lambda w, b: [T, *QUICK, "train.max_steps=0", "--output", w / "N"], words=("train.max_steps",))
    add("train-lr-negative", "5", lambda w, b: [T, *QUICK, "optim.base_lr=-1", "--output", w / "N"], words=("optim.base_lr",))
    add("train-typo-key", "5", lambda w, b: [T, *QUICK, "train.epoch=3", "--output", w / "N"], words=("train.epoch",))
    add("train-unknown-method", "5", lambda w, b: [T, *QUICK, "model.method=nope", "--output", w / "N"], words=("nope",))
    add("train-precision-fp8", "5", lambda w, b: [T, *QUICK, "train.precision=fp8", "--output", w / "N"], words=("train.precision",))
    add("train-augment-unknown", "5", lambda w, b: [T, *QUICK, "data.augment=nope", "--output", w / "N"], words=("data.augment",))
    add("train-batch-string", "5", lambda w, b: [T, *QUICK, "train.batch_size=abc", "--output", w / "N"], words=("train.batch_size",))
    add("train-batch-float", "5", lambda w, b: [T, *QUICK, "train.batch_size=64.5", "--output", w / "N"], words=("train.batch_size",))
    add("train-bool-as-string", "5", lambda w, b: [T, *QUICK, "eval.probe=maybe", "--output", w / "N"], words=("eval.probe",))
    add("lm-heads-not-dividing", "5", lambda w, b: [T, *LM_TINY, "model.n_heads=3", "--output", w / "N"], words=("n_heads",))
    add("lm-max-steps-0", "5", lambda w, b: [T, *LM_TINY, "train.max_steps=0", "--output", w / "N"], words=("train.max_steps",))
    add("lm-n-train-0", "5", lambda w, b: [T, *LM_TINY, "data.n_train=0", "--output", w / "N"], words=("data.n_train",))
    add("lm-max-new-tokens-0", "5", lambda w, b: [T, *LM_TINY, "eval.max_new_tokens=0", "--output", w / "N"], words=("eval.max_new_tokens",))
    add("lm-typo-key", "5", lambda w, b: [T, *LM_TINY, "model.n_layer=2", "--output", w / "N"], words=("model.n_layer",))
    add("lm-image-key", "5", lambda w, b: [T, *LM_TINY, "data.image_size=32", "--output", w / "N"], words=("data.image_size",))
    add("gsm8k-limit-0", "5", lambda w, b: [E, "gsm8k", w / "lm", b.qa, "--limit", "0"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("--limit",))
    add("gsm8k-batch-0", "5", lambda w, b: [E, "gsm8k", w / "lm", b.qa, "--batch-size", "0"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("--batch-size",))
    add("gsm8k-max-new-0", "5", lambda w, b: [E, "gsm8k", w / "lm", b.qa, "--max-new-tokens", "0"], setup=lambda w, b: cp(b.lm, w / "lm"),
        words=("--max-new-tokens",))
    add("gsm8k-protocol-bad", "5", lambda w, b: [E, "gsm8k", w / "lm", b.qa, "--protocol", "nope"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("--protocol",))
    add("spectrum-space-backbone", "5", lambda w, b: [S, w / "run", "--space", "backbone", "-o", w / "r.html"], expect="ok", writes=("r.html",),
        setup=lambda w, b: cp(b.quick, w / "run"),
        check=lambda r, w, b: None if "backbone" in (w / "r.html").read_text(errors="replace") else "no backbone in report")
    add("train-resume-auto-numbered", "5", lambda w, b: [T, *QUICK, "--resume", "auto", "--dry-run"], cwd=".", expect="ok",
        setup=lambda w, b: (cp(b.quick, w / "runs" / "quickstart"), cp(b.qmax, w / "runs" / "quickstart-2")),
        check=lambda r, w, b: None if "quickstart-2" in r.stdout + r.stderr else "did not continue the newest")

    # ---- 6. signals ---------------------------------------------------------------------------------------------------
    LONG = [*QUICK[:3], "data.fraction=0.2", "train.epochs=3", "train.batch_size=64", "eval.monitor_samples=128", "eval.knn_train_samples=128",
            "eval.probe=false", "eval.final_linear=false", "train.log_every=1"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        add(f"signal-{sig.name}-image", "6", lambda w, b: [T, *LONG, "--output", w / "run"], sig=(sig, "run/metrics.jsonl", 0.5),
            code=128 + sig, words=("checkpoint", "--resume auto"), writes=("run", "run/**"))
    add("signal-SIGTERM-lm", "6", lambda w, b: [T, *[a for a in LM_TINY if a != "train.max_steps=4"], "train.max_steps=400", "--output", w / "run"],
        sig=(signal.SIGTERM, "run/metrics.jsonl", 0.5), code=128 + signal.SIGTERM, words=("checkpoint", "--resume auto"), writes=("run", "run/**"))
    add("signal-SIGINT-eval-linear", "new", lambda w, b: [E, "linear", w / "run", f"root={b.sample}", "epochs=3000", "--preset", "fmnist-sample",
                                                         "--no-cache", *CHEAP_EVAL],
        setup=lambda w, b: cp(b.quick, w / "run"), sig=(signal.SIGINT, None, 12.0), code=130, words=("SIGINT",))
    add("signal-SIGTERM-eval-linear", "new", lambda w, b: [E, "linear", w / "run", f"root={b.sample}", "epochs=3000", "--preset", "fmnist-sample",
                                                          "--no-cache", *CHEAP_EVAL],
        setup=lambda w, b: cp(b.quick, w / "run"), sig=(signal.SIGTERM, None, 12.0), code=128 + signal.SIGTERM, words=("SIGTERM",))

    # ---- 7. tracebacks and unclear errors at the edges ----------------------------------------------------------------
    add("spectrum-missing-dir", "7", lambda w, b: [S, w / "nope", "-o", w / "r.html"], words=("nope",))
    add("spectrum-data-tree", "7", lambda w, b: [S, b.tree, "-o", w / "r.html"], words=("run",))
    add("spectrum-torn-spectra-line", "7", lambda w, b: [S, w / "run", "-o", w / "r.html"], expect="ok", writes=("r.html",),
        setup=lambda w, b: (cp(b.quick, w / "run"), open(w / "run" / "spectra.jsonl", "a").write('{"epoch": 9, "eig')),
        check=lambda r, w, b: None if (w / "r.html").is_file() else "no report")
    add("spectrum-config-binary", "7", lambda w, b: [S, w / "run", "-o", w / "r.html"],
        setup=lambda w, b: (cp(b.quick, w / "run"), write(w / "run" / "config.yaml", bytes(range(256)) * 4)), words=("config.yaml",))
    add("spectrum-config-list", "7", lambda w, b: [S, w / "run", "-o", w / "r.html"],
        setup=lambda w, b: (cp(b.quick, w / "run"), write(w / "run" / "config.yaml", "- a\n- b\n")), words=("config.yaml",))
    add("spectrum-epochs-non-utf8", "7", lambda w, b: [S, w / "run", "-o", w / "r.html"], expect="ok", writes=("r.html",),  # a stray byte in a
        setup=lambda w, b: (cp(b.quick, w / "run"), write(w / "run" / "epochs.jsonl", '{"epoch": 0, "note": "café"}\n'.encode("latin-1"))),  # note
        check=lambda r, w, b: None if (w / "r.html").is_file() else "no report")
    add("spectrum-eigs-negative-strings", "7", lambda w, b: [S, w / "run", "-o", w / "r.html"],
        setup=lambda w, b: (cp(b.quick, w / "run"), damage_lines(w / "run" / "spectra.jsonl", lambda r: {**r, "eigenvalues": [None, "x"]})),
        words=("damaged",))
    add("spectrum-eigs-dict", "new", lambda w, b: [S, w / "run", "-o", w / "r.html"],
        setup=lambda w, b: (cp(b.quick, w / "run"), damage_lines(w / "run" / "spectra.jsonl", lambda r: {**r, "eigenvalues": {"a": 1}})),
        words=("damaged",))
    add("spectrum-spectra-rows-are-lists", "new", lambda w, b: [S, w / "run", "-o", w / "r.html"],
        setup=lambda w, b: (cp(b.quick, w / "run"), damage_lines(w / "run" / "spectra.jsonl", lambda r: [1, 2])), words=("damaged",))
    add("spectrum-summary-garbage", "7", lambda w, b: [S, w / "run", "-o", w / "r.html"], expect="ok", writes=("r.html",),
        setup=lambda w, b: (cp(b.quick, w / "run"), write(w / "run" / "summary.json", "[1, 2")), check=lambda r, w, b: None)
    add("spectrum-two-runs", "7", lambda w, b: [S, w / "a", w / "b", "-o", w / "r.html"], expect="ok", writes=("r.html",),
        setup=lambda w, b: (cp(b.quick, w / "a"), cp(b.inet, w / "b")),
        check=lambda r, w, b: None if all(n in (w / "r.html").read_text() for n in ("a", "b")) else "names")
    add("spectrum-lm-and-image", "7", lambda w, b: [S, w / "a", w / "lm", "-o", w / "r.html"],
        setup=lambda w, b: (cp(b.quick, w / "a"), cp(b.lm, w / "lm")), words=("language-model",))
    add("spectrum-same-run-twice", "new", lambda w, b: [S, w / "a", w / "a", "-o", w / "r.html"], expect="ok", writes=("r.html",),
        setup=lambda w, b: cp(b.quick, w / "a"), check=lambda r, w, b: None)
    add("spectrum-synthetic", "7", lambda w, b: [S, b.synth, "-o", w / "r.html", "--title", "probe"], expect="ok", writes=("r.html",),
        check=lambda r, w, b: None if "probe" in (w / "r.html").read_text() else "title")
    # a damaged config.yaml: the checkpoint's own config is what the evaluation reads (the run as trained)
    add("knn-config-non-utf8", "7", lambda w, b: [E, "knn", w / "run", "ks=[5]", *CHEAP_EVAL], expect="ok", writes=("run/eval/knn.json",),
        setup=lambda w, b: (cp(b.inet, w / "run"), write(w / "run" / "config.yaml", "format: 2\nnote: caf\xe9\n".encode("latin-1"))),
        check=knn_ok(32, 12))
    add("knn-config-format-1", "7", lambda w, b: [E, "knn", w / "run", "ks=[5]", *CHEAP_EVAL], expect="ok", writes=("run/eval/knn.json",),
        setup=lambda w, b: (cp(b.inet, w / "run"), write(w / "run" / "config.yaml", "format: 1\nmethod: matrix_ssl\n")), check=knn_ok(32, 12))
    add("knn-empty-ckpt", "7", lambda w, b: [E, "knn", w / "run" / "checkpoints" / "step_00000001.pt"],
        setup=lambda w, b: write(w / "run" / "checkpoints" / "step_00000001.pt", b""), words=("step_00000001.pt",))
    add("knn-empty-dir", "7", lambda w, b: [E, "knn", w / "empty"], setup=lambda w, b: (w / "empty").mkdir(), words=("empty",))
    add("knn-missing-path", "7", lambda w, b: [E, "knn", w / "nope"], words=("nope",))
    add("knn-manifest-garbage", "new", lambda w, b: [E, "knn", w / "run", "ks=[5]", *CHEAP_EVAL], expect="ok", writes=("run/eval/knn.json",),
        setup=lambda w, b: (cp(b.inet, w / "run"), open(w / "run" / "checkpoints" / "manifest.jsonl", "a").write("garbage\n")),
        check=knn_ok(32, 12))
    add("knn-manifest-gone", "new", lambda w, b: [E, "knn", w / "run"],
        setup=lambda w, b: (cp(b.inet, w / "run"), (w / "run" / "checkpoints" / "manifest.jsonl").unlink()), words=("checkpoint",))
    add("knn-ckpt-state-not-dict", "new", lambda w, b: [E, "knn", w / "x.pt"],
        setup=lambda w, b: __import__("torch").save([1, 2, 3], w / "x.pt"), words=("x.pt",))
    add("eval-no-subcommand", "7", lambda w, b: [E], words=())
    add("eval-bogus-subcommand", "7", lambda w, b: [E, "bogus"], words=("bogus",))
    add("eval-knn-no-run", "7", lambda w, b: [E, "knn"], words=("RUN",))
    add("eval-list-presets", "7", lambda w, b: [E, "linear", "--list-presets"], expect="ok", check=expect_stdout("fmnist-sample"))
    add("eval-override-before-run", "new", lambda w, b: [E, "knn", "ks=[5]", w / "run", *CHEAP_EVAL], expect="ok",
        setup=lambda w, b: cp(b.inet, w / "run"), writes=("run/eval/knn.json",), check=knn_ok(32, 12))
    add("train-no-args", "7", lambda w, b: [T], words=("--preset",))
    add("train-unknown-preset", "7", lambda w, b: [T, "--preset", "nope"], words=("nope",))
    add("train-config-missing", "7", lambda w, b: [T, "--config", w / "nope.yaml"], words=("nope.yaml",))
    add("train-config-list", "7", lambda w, b: [T, "--config", w / "c.yaml"], setup=lambda w, b: write(w / "c.yaml", "- 1\n- 2\n"), words=("c.yaml",))
    add("train-config-empty", "new", lambda w, b: [T, "--config", w / "c.yaml", "--output", w / "N"], setup=lambda w, b: write(w / "c.yaml", ""),
        words=())
    add("train-plugin-missing", "7", lambda w, b: [T, *QUICK, "--plugin", "no_such_plugin_mod", "--dry-run"], words=("no_such_plugin_mod",))
    add("train-plugin-syntax-error", "new", lambda w, b: [T, *QUICK, "--plugin", "badplug", "--dry-run"], cwd=".",
        setup=lambda w, b: write(w / "badplug.py", "def f(:\n  pass\n"), words=("badplug",))
    add("train-plugin-raises", "new", lambda w, b: [T, *QUICK, "--plugin", "raiseplug", "--dry-run"], cwd=".",
        setup=lambda w, b: write(w / "raiseplug.py", "raise RuntimeError('plugin broke')\n"), words=("raiseplug",))
    add("train-resume-missing", "7", lambda w, b: [T, *QUICK, "--resume", w / "nope.pt", "--output", w / "N"], words=("nope.pt",))
    add("train-resume-garbage", "7", lambda w, b: [T, *QUICK, "--resume", w / "g.pt", "--output", w / "N"],
        setup=lambda w, b: write(w / "g.pt", b"garbage" * 100), words=("g.pt",))
    add("train-override-no-equals", "7", lambda w, b: [T, *QUICK, "train.epochs", "--output", w / "N"], words=("key=value",))
    add("train-override-empty-part", "7", lambda w, b: [T, *QUICK, "train..epochs=1", "--output", w / "N"], words=("train..epochs",))
    add("train-section-scalar", "7", lambda w, b: [T, *QUICK, "train=3", "--output", w / "N"], words=("train",))
    add("train-nproc-0", "7", lambda w, b: [T, *QUICK, "--nproc_per_node", "0", "--output", w / "N"], words=("--nproc_per_node",))
    add("train-root-missing", "7", lambda w, b: [T, *INET, f"data.root={w / 'nope'}", "--output", w / "N"], words=("nope",))
    add("train-root-is-file", "7", lambda w, b: [T, *INET, f"data.root={w / 'f'}", "--output", w / "N"], setup=lambda w, b: write(w / "f", "x"),
        words=("f",))
    add("train-root-no-train-split", "7", lambda w, b: [T, *INET, f"data.root={w / 'd'}", "--output", w / "N"],
        setup=lambda w, b: (w / "d" / "val").mkdir(parents=True), words=("train",))
    add("train-root-empty-classes", "new", lambda w, b: [T, *INET, f"data.root={w / 'd'}", "--output", w / "N"],
        setup=lambda w, b: [(w / "d" / s / "n01").mkdir(parents=True) for s in ("train", "val")], words=("d",))
    add("train-data-summary-broken", "7", lambda w, b: [T, "--preset", "imagenet-matrixssl-r50-100ep", f"data.root={b.broken}", "--data-summary"],
        expect="ok", check=lambda r, w, b: None if "33" in r.stdout or "32" in r.stdout else "counts")
    add("train-data-summary-fmnist", "7", lambda w, b: [T, *QUICK, "--data-summary"], expect="ok", check=expect_stdout("train"))
    add("train-batch-not-dividing-2proc", "7", lambda w, b: [T, *QUICK, "train.batch_size=63", "--nproc_per_node", "2", "--output", w / "N"],
        words=("divisible",))
    add("train-backbone-kwargs-typo", "7", lambda w, b: [T, *QUICK, "model.backbone_kwargs.chanels=[8,8,8,8]", "--output", w / "N"],
        words=("chanels",))
    add("train-backbone-unknown", "7", lambda w, b: [T, *QUICK, "model.backbone=resnet_nope", "--output", w / "N"], words=("resnet_nope",))
    add("train-config-run-own", "7", lambda w, b: [T, "--config", w / "run" / "config.yaml", "--dry-run"], expect="ok",
        setup=lambda w, b: cp(b.quick, w / "run"),
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["model"]["backbone_kwargs"].get("stem_width") == 8 else "kwargs")
    add("train-override-after-flag", "7", lambda w, b: [T, "--preset", "quickstart", "--dry-run", "train.epochs=3", "--quiet", "data.fraction=0.1"],
        expect="ok", check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout)["train"]["epochs"] == 3 else "epochs")
    add("train-lm-lr-huge", "7", lambda w, b: [T, *LM_TINY, "optim.base_lr=1e39", "--output", w / "N"], words=("optim.base_lr",))
    add("train-image-lr-huge", "new", lambda w, b: [T, *QUICK, "optim.base_lr=1e39", "--output", w / "N"], words=("optim.base_lr",))
    add("train-lm-second-run-numbered", "7", lambda w, b: [T, *LM_TINY, "--dry-run"], cwd=".", expect="ok",
        setup=lambda w, b: cp(b.lm, w / "runs" / "lm-arith-ce"), check=lambda r, w, b: None)
    add("gsm8k-data-missing", "7", lambda w, b: [E, "gsm8k", w / "lm", w / "nope.jsonl"], setup=lambda w, b: cp(b.lm, w / "lm"), words=("nope.jsonl",))
    add("gsm8k-data-empty", "7", lambda w, b: [E, "gsm8k", w / "lm", w / "e.jsonl"], setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "e.jsonl", "")),
        words=("e.jsonl",))
    add("gsm8k-data-bad-json", "7", lambda w, b: [E, "gsm8k", w / "lm", w / "e.jsonl"],
        setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "e.jsonl", '{"question": "a", "answer": "#### 1"}\n{oops\n')), words=("e.jsonl",))
    add("gsm8k-data-no-question", "7", lambda w, b: [E, "gsm8k", w / "lm", w / "e.jsonl"],
        setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "e.jsonl", '{"q": "a", "a": "#### 1"}\n')), words=("e.jsonl",))
    add("gsm8k-data-non-utf8", "7", lambda w, b: [E, "gsm8k", w / "lm", w / "e.jsonl"],
        setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "e.jsonl", '{"question": "café", "answer": "#### 1"}\n'.encode("latin-1"))),
        words=("UTF-8",))
    add("gsm8k-data-is-dir", "new", lambda w, b: [E, "gsm8k", w / "lm", w / "d"], setup=lambda w, b: (cp(b.lm, w / "lm"), (w / "d").mkdir()),
        words=("d",))
    add("gsm8k-model-not-hf", "7", lambda w, b: [E, "gsm8k", w / "d", b.qa], setup=lambda w, b: write(w / "d" / "notes.txt", "x"), words=("d",))
    add("gsm8k-ckpt-truncated", "7", lambda w, b: [E, "gsm8k", w / "lm" / "checkpoints" / "step_00000004.pt", b.qa],
        setup=lambda w, b: (cp(b.lm, w / "lm"), truncate(w / "lm" / "checkpoints" / "step_00000004.pt")), words=("older checkpoint",))
    add("gsm8k-config-missing-dry-run", "new", lambda w, b: [E, "gsm8k", w / "lm" / "checkpoints" / "step_00000004.pt", "--dry-run"], expect="ok",
        setup=lambda w, b: (cp(b.lm, w / "lm"), (w / "lm" / "config.yaml").unlink()),    # the protocol the scoring would use: the checkpoint's
        check=lambda r, w, b: None if __import__("yaml").safe_load(r.stdout).get("max_new_tokens") == 8 else "not the checkpoint's protocol")
    add("gsm8k-config-damaged", "new", lambda w, b: [E, "gsm8k", w / "lm", b.qa], expect="ok",        # the checkpoint's config is read
        setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "lm" / "config.yaml", "format: 2\nkind: lm\nmodel: [\n")),
        writes=("lm/eval/gsm8k.json", "lm/eval/generations_qa.jsonl"), check=lambda r, w, b: None if jread(w / "lm" / "eval" / "gsm8k.json")["n"] == 3 else "n")
    add("gsm8k-config-damaged-dry-run", "new", lambda w, b: [E, "gsm8k", w / "lm", "--dry-run"],
        setup=lambda w, b: (cp(b.lm, w / "lm"), write(w / "lm" / "config.yaml", "format: 2\nkind: lm\nmodel: [\n")), words=("config.yaml",))
    add("coco-score-gt-missing", "7", lambda w, b: [E, "coco-score", "--gt", w / "nope.json", "--detections", w / "det.json"],
        setup=lambda w, b: coco_pair(b, w), words=("nope.json",))
    add("coco-score-det-garbage", "7", lambda w, b: [E, "coco-score", "--gt", w / "gt.json", "--detections", w / "det.json"],
        setup=lambda w, b: (coco_pair(b, w), write(w / "det.json", "{not json")), words=("det.json",))
    add("coco-score-det-wrong-image", "new", lambda w, b: [E, "coco-score", "--gt", w / "gt.json", "--detections", w / "det.json"],
        setup=lambda w, b: (coco_pair(b, w), write(w / "det.json", json.dumps([{"image_id": 999999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))),
        words=("det.json",))
    add("coco-score-no-args", "7", lambda w, b: [E, "coco-score"], words=("--gt",))
    add("coco-missing-data", "7", lambda w, b: [E, "coco", w / "r18", "--data", w / "nope"], setup=lambda w, b: cp(b.r18, w / "r18"), words=("nope",))
    add("export-d2-missing", "7", lambda w, b: [E, "export-detectron2", w / "nope"], words=("nope",))

    # ---- the dashboard (the reader a notebook's Dashboard(root) runs) -------------------------------------------------
    D = "dashboard"
    add("dashboard-empty-root", "7", lambda w, b: [D, w / "runs"], expect="ok", setup=lambda w, b: (w / "runs").mkdir(),
        check=lambda r, w, b: None if "no runs found" in jread_s(r)["status"] else "no hint")
    add("dashboard-missing-root", "7", lambda w, b: [D, w / "nope"], words=("nope",))
    add("dashboard-root-is-file", "new", lambda w, b: [D, w / "f"], setup=lambda w, b: write(w / "f", "x"), words=("f",))
    add("dashboard-two-runs", "7", lambda w, b: [D, w / "runs"], expect="ok",
        setup=lambda w, b: (cp(b.quick, w / "runs" / "a"), cp(b.inet, w / "runs" / "b")),
        check=lambda r, w, b: None if sorted(jread_s(r)["runs"]) == ["a", "b"] and not jread_s(r)["skipped"] else f"runs {jread_s(r)}")
    add("dashboard-damaged-run", "7", lambda w, b: [D, w / "runs"], expect="ok",
        setup=lambda w, b: (cp(b.quick, w / "runs" / "a"), cp(b.quick, w / "runs" / "bad"),
                            damage_lines(w / "runs" / "bad" / "spectra.jsonl", lambda r: {**r, "eigenvalues": "abc"})),
        check=lambda r, w, b: None if list(jread_s(r)["skipped"]) and "bad" in list(jread_s(r)["skipped"])[0] and "damaged" in jread_s(r)["status"]
        else f"damaged run not named: {jread_s(r)}")
    add("dashboard-lm-run", "new", lambda w, b: [D, w / "runs"], expect="ok",
        setup=lambda w, b: (cp(b.quick, w / "runs" / "a"), cp(b.lm, w / "runs" / "lm")),
        check=lambda r, w, b: None if "a" in jread_s(r)["runs"] else f"{jread_s(r)}")
    add("dashboard-non-utf8-config", "new", lambda w, b: [D, w / "runs"], expect="ok",
        setup=lambda w, b: (cp(b.quick, w / "runs" / "a"), cp(b.quick, w / "runs" / "bad"),
                            write(w / "runs" / "bad" / "config.yaml", "format: 2\nnote: caf\xe9\n".encode("latin-1"))),
        check=lambda r, w, b: None if any("bad" in k for k in jread_s(r)["skipped"]) else f"not named: {jread_s(r)}")
    add("dashboard-summary-list", "new", lambda w, b: [D, w / "runs"], expect="ok",
        setup=lambda w, b: (cp(b.quick, w / "runs" / "a"), write(w / "runs" / "a" / "summary.json", "[1, 2]")),
        check=lambda r, w, b: None if jread_s(r)["runs"] == ["a"] else f"{jread_s(r)}")
    add("dashboard-synthetic", "7", lambda w, b: [D, b.synth.parent], expect="ok",
        check=lambda r, w, b: None if b.synth.name in jread_s(r)["runs"] else f"{jread_s(r)}")

    # ---- mssl-study ---------------------------------------------------------------------------------------------------
    st = lambda **k: (lambda w, b: write(w / "study.yaml", study_yaml(b.tree, **k)))
    add("study-dry-run", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], expect="ok", setup=st(),
        check=lambda r, w, b: None if "simclr" in r.stdout and "matrix_ssl" in r.stdout else "cells not listed", writes=("out", "out/**"))
    add("study-status", "7", lambda w, b: [Y, "status", w / "study.yaml"], expect="ok", setup=st(),
        check=lambda r, w, b: None if "simclr" in r.stdout or "to do" in r.stdout else "no cells", writes=("out", "out/**"))
    add("study-report-nothing-done", "7", lambda w, b: [Y, "report", w / "study.yaml"], setup=st(), expect="ok", writes=("out", "out/**"),
        check=lambda r, w, b: None if "0 cells (0 failed)" in (w / "out" / "report.html").read_text() else "the report does not say it has no cell")
    add("study-table-nothing", "7", lambda w, b: [Y, "run", w / "study.yaml", "--table"], expect="ok", setup=st(), check=lambda r, w, b: None,
        writes=("out", "out/**"))
    add("study-init-then-dry-run", "7", lambda w, b: [Y, "run", w / "s.yaml", "--dry-run"], expect="ok",
        setup=lambda w, b: subprocess.run([str(BIN / "mssl-study"), "init", str(w / "s.yaml")], capture_output=True, env=ENV, stdin=subprocess.DEVNULL),
        check=lambda r, w, b: None if "matrix_ssl" in r.stdout else "cells", writes=("my-study-results", "my-study-results/**"))
    add("study-missing-file", "7", lambda w, b: [Y, "run", w / "nope.yaml", "--dry-run"], words=("nope.yaml",))
    add("study-unknown-method", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], setup=st(methods=[{"name": "nope"}]), words=("nope",))
    add("study-empty-rates", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], setup=st(rates={"factors": []}), words=("rates",))
    add("study-missing-data", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"],
        setup=st(data={"dataset": "imagefolder", "root": "/nonexistent/tree", "image_size": 32}), words=("/nonexistent/tree",))
    add("study-budget-0", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], setup=st(budgets=[{"name": "b", "epochs": 0}]), words=("epochs",))
    add("study-yaml-syntax", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], setup=lambda w, b: write(w / "study.yaml", "name: [x\n"),
        words=("study.yaml",))
    add("study-not-mapping", "7", lambda w, b: [Y, "status", w / "study.yaml"], setup=lambda w, b: write(w / "study.yaml", "- a\n"), words=("study.yaml",))
    add("study-unknown-key", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], setup=st(seedz=3), words=("seedz",))
    add("study-binary-file", "7", lambda w, b: [Y, "status", w / "study.yaml"], setup=lambda w, b: write(w / "study.yaml", bytes(range(256)) * 4),
        words=("study.yaml",))
    add("study-output-holds-other", "7", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"],
        setup=lambda w, b: (st()(w, b), write(w / "out" / "mssl-study.yaml", study_yaml(b.tree, name="other"))),   # out/ is study 'other's
        words=("holds study 'other'",))
    add("study-parallel-0", "7", lambda w, b: [Y, "run", w / "study.yaml", "--parallel", "0"], setup=st(), words=("--parallel",))
    add("study-only-unknown", "new", lambda w, b: [Y, "run", w / "study.yaml", "--only", "nope", "--dry-run"], setup=st(), words=("nope",),
        writes=("out", "out/**"))
    add("study-family-unknown", "new", lambda w, b: [Y, "run", w / "study.yaml", "--family", "nope", "--dry-run"], setup=st(), words=("nope",),
        writes=("out", "out/**"))
    add("study-verify-negative", "new", lambda w, b: [Y, "run", w / "study.yaml", "--verify", "-1"], setup=st(), words=("--verify",))
    add("study-max-minutes-negative", "new", lambda w, b: [Y, "run", w / "study.yaml", "--max-minutes", "-5"], setup=st(), words=("--max-minutes",))
    add("study-recipe-bad-override", "new", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"],
        setup=st(recipe={"common": ["train.epoch=3"]}), words=("train.epoch",))
    add("study-protocol-unknown", "new", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"],
        setup=st(protocols={"linearr": {}}), words=("linearr",))
    add("study-seeds-empty", "new", lambda w, b: [Y, "run", w / "study.yaml", "--dry-run"], setup=st(seeds={"base": []}), words=("seeds",))
    add("study-report-is-dir", "new", lambda w, b: [Y, "report", w / "study.yaml", "--output", w / "d"],
        setup=lambda w, b: (st()(w, b), (w / "d").mkdir()), words=("d",))
    return C


def jread_s(r):
    return json.loads(r.stdout.strip().splitlines()[-1])


def truncate(path: Path, size: int = 1000):
    with open(path, "r+b") as f: f.truncate(size)


def retarget(run: Path, root: Path):
    "The run's config names a data root that no longer exists (the tree was moved away)"
    import yaml
    d = yaml.safe_load((run / "config.yaml").read_text())
    d["data"]["root"] = str(root)
    (run / "config.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return run


def coco_pair(b, w: Path):
    "The synthetic COCO's val annotations and detections that are its own boxes (a perfect detector: AP 1)"
    gt = json.loads((b.coco / "annotations" / "instances_val2017.json").read_text())
    write(w / "gt.json", json.dumps(gt))
    det = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]]
    write(w / "det.json", json.dumps(det))


def d2_check(pkl: Path, run: Path):
    "The exported pickle's stem weight equals the checkpoint's conv1 weight"
    import pickle
    import numpy as np
    import torch
    d = pickle.loads(pkl.read_bytes())
    model = d.get("model", d)
    state = torch.load(ckpt_of(run), map_location="cpu", weights_only=True)["model"]
    conv1 = next(v for k, v in state.items() if k.endswith("conv1.weight") and "layer" not in k and "target" not in k)
    stem = next((v for k, v in model.items() if k.startswith("stem.conv1.weight")), None)
    if stem is None: return f"no stem.conv1.weight among {list(model)[:5]}"
    return None if np.allclose(np.asarray(stem), conv1.numpy()) else "stem weights differ from the checkpoint's"


# ----------------------------------------------------------------------------------------------------------- the base
class Base:
    "The tiny real artefacts every case copies from, made once by the real console scripts"
    def __init__(self, root: Path):
        self.root = root
        for k in ("quick", "qmax", "lm", "tree", "broken", "inet", "r18", "coco"): setattr(self, k, root / k)
        self.synth, self.qa = root / "synth-runs" / "demo", root / "qa.jsonl"
        from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
        self.sample = SAMPLE_FASHION_MNIST

    def make(self):
        from mssl_workbench.data.folders import make_imagefolder
        from mssl_workbench.reports.spectrum import make_synthetic_run
        t0 = time.monotonic()
        make_imagefolder(self.tree, per_class={"train": 8, "val": 3, "test": 4}, num_classes=4, size=40)
        make_imagefolder(self.broken, per_class={"train": 8, "val": 3}, num_classes=4, size=40)
        write(self.broken / "train" / "n00000001" / "broken.JPEG", b"not an image at all")
        write(self.broken / "val" / "n00000002" / "broken.JPEG", b"\xff\xd8 not a jpeg either")
        make_synthetic_run(self.synth, epochs=2, dim=16, seed=0)
        write(self.qa, "".join(json.dumps({"question": f"Ann has {a} apples and gets {c} more. How many?", "answer": f"#### {a + c}"}) + "\n"
                               for a, c in [(2, 3), (4, 1), (5, 2)]))
        for argv in ([*QUICK, "--output", self.quick], [*QUICK, "train.max_steps=2", "--output", self.qmax], [*LM_TINY, "--output", self.lm],
                     [*INET, f"data.root={self.tree}", "--output", self.inet], [*R18, "model.small_input=false", "--output", self.r18]):
            run_checked("mssl-train", *argv)
        run_checked("mssl-eval", "make-synthetic-coco", self.coco, "--train", "2", "--val", "2", "--size", "64")
        print(f"base made in {time.monotonic() - t0:.0f} s", flush=True)


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error",
       "CI": "1", "PYTHONPATH": str(ROOT)}


def run_checked(script, *argv):
    r = subprocess.run([str(BIN / script), *map(str, argv)], capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL, timeout=900)
    if r.returncode != 0: raise SystemExit(f"probe: making the base failed: {script} {' '.join(map(str, argv))}\n{r.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------------------ classification
def digest(folder: Path) -> dict:
    "{relative path: sha256 (files) or 'dir'} of everything under `folder`"
    out = {}
    if not folder.exists(): return out
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink(): out[rel] = "link"
        elif p.is_dir(): out[rel] = "dir"
        elif p.is_file(): out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def allowed(rel: str, globs) -> bool:
    return any(fnmatch(rel, g) for g in globs)


USAGE = ("usage:", " ")


def error_lines(stderr: str) -> list[str]:
    "stderr's lines without argparse's usage block (its `usage:` line and the indented lines after it)"
    out, in_usage = [], False
    for l in stderr.splitlines():
        if not l.strip(): continue
        if l.startswith("usage:"): in_usage = True; continue
        if in_usage and l.startswith(" "): continue
        in_usage = False
        out.append(l)
    return out


def classify(case: Case, rc, out: str, err: str, lost: list, litter: list, check_msg: str | None, hung: bool) -> tuple[str, str]:
    "(outcome, note)"
    if hung: return "hang", "timeout"
    if "Traceback" in out or "Traceback" in err: return "traceback", next((l for l in reversed(err.splitlines()) if l.strip()), "")[:200]
    if lost: return "lost", f"changed or vanished: {lost[:5]}"
    if case.expect == "ok":
        if rc == 0: return ("correct success", "") if check_msg is None else ("silent", check_msg)
        return "unclear", f"exit {rc} where success was expected"
    if rc == 0: return "silent", "exit 0 where an error was expected"
    lines = error_lines(err)
    if rc != case.code: return "unclear", f"exit {rc}, expected {case.code}"
    if not lines: return "unclear", "nothing on stderr"
    if len(lines) > 3 or lines.count(lines[-1]) > 1: return "unclear", f"{len(lines)} stderr lines"   # notes before the error: at most two
    missing = [w for w in case.words if w not in lines[-1]]
    if missing: return "unclear", f"the last line lacks {missing}"
    if len(lines[-1]) > 600: return "unclear", "a line of more than 600 characters"
    if litter: return "unclear", f"a refusal left new files: {litter[:5]}"
    return "clear error", "" if len(lines) == 1 else f"after {len(lines) - 1} note line(s)"


def _terminal_signals():
    "A command's signals as a terminal leaves them (the probe may run in the background, where the shell ignores SIGINT)"
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM): signal.signal(s, signal.SIG_DFL)


def run_case(case: Case, work: Path, base: Base, cache: Path) -> dict:
    w = work / "cases" / case.name
    w.mkdir(parents=True)
    if case.setup: case.setup(w, base)
    argv = [str(a) for a in case.argv(w, base)]
    if argv[0] == "dashboard": cmd = [sys.executable, str(Path(__file__).resolve()), "--dashboard", *argv[1:]]
    else: cmd = [str(BIN / argv[0]), *argv[1:]]
    env = {**ENV, "MSSL_CACHE": str(cache), **case.env}
    before, base_before = digest(w), digest(base.root)
    t0, hung = time.monotonic(), False
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                         cwd=w / case.cwd if case.cwd else work, start_new_session=True, preexec_fn=_terminal_signals)
    if case.sig:
        sig, started, after = case.sig
        deadline = time.monotonic() + case.timeout
        while p.poll() is None and time.monotonic() < deadline:
            f = w / started if started else None
            if f is None or (f.is_file() and f.read_text().strip()): break
            time.sleep(0.2)
        time.sleep(after)
        if p.poll() is None: os.kill(p.pid, sig)
    try: out, err = p.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        hung = True
    secs = time.monotonic() - t0
    after, base_after = digest(w), digest(base.root)
    lost = [k for k, v in before.items() if after.get(k) != v and not allowed(k, case.writes)]
    lost += [f"base/{k}" for k, v in base_before.items() if base_after.get(k) != v]
    new = [k for k in after if k not in before]
    litter = [k for k in new if not allowed(k, case.writes) and not k.startswith("N/")
              and not any(j.startswith(k + "/") and allowed(j, case.writes) for j in new)]
    litter = [k for k in litter if not any(k.startswith(l + "/") for l in litter)]
    check_msg = None
    if case.expect == "ok" and p.returncode == 0 and case.check and not hung:
        try: check_msg = case.check(subprocess.CompletedProcess(cmd, p.returncode, out, err), w, base)
        except Exception as e: check_msg = f"check failed: {type(e).__name__}: {e}"
    if case.expect == "ok" and p.returncode == 0 and litter and check_msg is None: check_msg = f"wrote unexpected files: {litter[:5]}"
    last = next((l for l in reversed(err.splitlines()) if l.strip()), "")
    named = re.search(r"checkpoint (/\S+\.pt)", last) if case.sig else None
    if named and not Path(named[1]).is_file():                    # a stopped run names the checkpoint it wrote: it must be there
        check_msg = f"the stop line names {named[1]}, which does not exist"
    outcome, note = classify(case, p.returncode, out, err, lost, litter if case.expect == "error" else [], check_msg, hung)
    if named and check_msg and outcome == "clear error": outcome, note = "silent", check_msg
    if case.expect == "error" and (w / "N").exists() and outcome == "clear error":
        outcome, note = "unclear", "a refused run left its output folder N"
    return {"name": case.name, "class": case.cls, "command": " ".join(argv), "cwd": str(case.cwd or "."), "expect": case.expect,
            "words": list(case.words), "outcome": outcome, "exit": p.returncode, "last_stderr": last[:500], "note": note,
            "seconds": round(secs, 1), "stdout_tail": out[-300:]}


# ------------------------------------------------------------------------------------------------------ the dashboard
def dashboard_main(root: str) -> int:
    "What a notebook's `Dashboard(root)` shows, as JSON on stdout: its status line, the runs listed and the runs it skipped"
    from mssl_workbench.engine.rundir import RunDirError
    from mssl_workbench.reports.dashboard import Dashboard
    try: d = Dashboard(root)
    except (FileNotFoundError, NotADirectoryError, RunDirError, ValueError) as e:
        print(f"dashboard: {e}", file=sys.stderr)
        return 2
    names = [label.split(" ⚠")[0] for label, _ in d.runs_select.options]
    _ = d.runs
    print(json.dumps({"status": d.status.value, "runs": names, "skipped": d.skipped_runs, "table": d.table.value[:2000]}))
    return 0


# ------------------------------------------------------------------------------------------------------------ report
OUTCOMES = ["clear error", "correct success", "unclear", "silent", "lost", "traceback", "hang"]


def count_table(rows: list[dict]) -> str:
    counts = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    head = "| cases | clear errors | correct successes | unclear | silent | lost | tracebacks | hangs |"
    return "\n".join([head, "|" + "---|" * 8, f"| {len(rows)} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |"])


def by_tool(rows: list[dict]) -> str:
    tools = {}
    for r in rows:
        tool = r["command"].split()[0] + (" " + r["command"].split()[1] if r["command"].split()[0] in ("mssl-eval", "mssl-study") and
                                          len(r["command"].split()) > 1 and not r["command"].split()[1].startswith("/") else "")
        tools.setdefault(tool, []).append(r["outcome"])
    lines = ["| entry point | cases | " + " | ".join(OUTCOMES) + " |", "|" + "---|" * (len(OUTCOMES) + 2)]
    for t in sorted(tools): lines.append(f"| `{t}` | {len(tools[t])} | " + " | ".join(str(tools[t].count(o)) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def by_class(rows: list[dict]) -> str:
    names = {"1": "a run mixed into another", "2": "generators that overwrite", "3": "a finished run rewritten", "4": "protocols that read the run",
             "5": "options that change meaning", "6": "signals", "7": "edges: tracebacks and unclear errors", "new": "kinds the issue does not name"}
    lines = ["| class | cases | " + " | ".join(OUTCOMES) + " |", "|" + "---|" * (len(OUTCOMES) + 2)]
    for c in names:
        got = [r["outcome"] for r in rows if r["class"] == c]
        lines.append(f"| {c}: {names[c]} | {len(got)} | " + " | ".join(str(got.count(o)) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def write_readme(rows: list[dict], load0, load1, minutes: float):
    (RESULTS / "README.md").write_text(
        "# Reliability probe (issue 30's acceptance check)\n\n"
        f"{len(rows)} cases over `mssl-train` (image and LM), every `mssl-eval` subcommand, `mssl-spectrum`, the dashboard's reader "
        "and `mssl-study`, each in its own folder, classified automatically (see the docstring of `tools/probe.py`).\n\n"
        f"{count_table(rows)}\n\nBy class of issue 30:\n\n{by_class(rows)}\n\nBy entry point:\n\n{by_tool(rows)}\n\n"
        "Command (from the repository root):\n\n"
        "    flock /tmp/mssl-test.lock env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tools/probe.py\n\n"
        f"Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in load0)}; at the end: "
        f"{', '.join(f'{x:.2f}' for x in load1)} (2 cores, shared with a background study at one thread). "
        f"Wall time {minutes:.1f} minutes.\n\nEvery case (command, expectation, outcome, exit code, last stderr line) "
        "is in `probe.json`.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run the cases whose name holds one of these")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    ap.add_argument("--no-write", action="store_true", help="do not write results/probe/")
    ap.add_argument("--base", help="reuse (or make once) the base artefacts in this folder (while developing cases)")
    ap.add_argument("--readme", action="store_true", help="rewrite results/probe/README.md from results/probe/probe.json and exit")
    ap.add_argument("--dashboard", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.dashboard: return dashboard_main(args.dashboard)
    if args.readme:
        d = json.loads((RESULTS / "probe.json").read_text())
        write_readme(d["cases"], d["load_start"], d["load_end"], d["minutes"])
        return 0
    load0, t0 = os.getloadavg(), time.monotonic()
    todo = [c for c in cases() if not args.only or any(o in c.name for o in args.only)]
    assert len({c.name for c in todo}) == len(todo), "case names must be unique"
    work = Path(tempfile.mkdtemp(prefix="mssl-probe-"))
    print(f"probe: {len(todo)} cases in {work}", flush=True)
    base = Base(Path(args.base).resolve() if args.base else work / "base")
    if not (base.root / "done").exists():
        base.make()
        (base.root / "done").write_text("")
    rows = []
    for i, case in enumerate(todo):
        row = run_case(case, work, base, work / "cache")
        rows.append(row)
        print(f"[{i + 1:3d}/{len(todo)}] {row['outcome']:16s} {row['seconds']:6.1f}s {case.name}  {row['note'][:120]}", flush=True)
    load1 = os.getloadavg()
    table = count_table(rows)
    print(table)
    for r in rows:
        if r["outcome"] not in ("clear error", "correct success"):
            print(f"- {r['name']} ({r['outcome']}, exit {r['exit']}): {r['note']} | {r['last_stderr'][:200]}")
    (work / "probe.json").write_text(json.dumps(rows, indent=1))
    if not args.no_write and not args.only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "probe.json").write_text(json.dumps({"cases": rows, "load_start": load0, "load_end": load1,
                                                         "minutes": round((time.monotonic() - t0) / 60, 1)}, indent=1) + "\n")
        write_readme(rows, load0, load1, (time.monotonic() - t0) / 60)
    if not args.keep: shutil.rmtree(work, ignore_errors=True)
    else: print(f"kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
