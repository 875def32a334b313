"""Faults and bad input through the real `mssl-train` command (issue 11): each class of the issue — data loss,
silent wrong results, tracebacks — tried as a user would, asserting the exit code, a one-line message that
names the fix, and what is on disk afterwards (checkpoints load, logs parse, nothing of another run deleted).

Process startup dominates (importing torch, torchvision and timm), so the cases that end before training are
started together (`bad_input` fixture) and checked one test each; the runs that train are a few seconds each."""
import errno
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from mssl_workbench.engine.hooks import MAX_WEIGHT
from mssl_workbench.engine.rundir import checkpoint_paths, latest_checkpoint, load_checkpoint, read_jsonl, read_run, save_checkpoint

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
ENV.pop("CI", None)
TINY = ["--quiet", "data.fraction=0.03", "model.backbone=resnet10t_mini", "model.proj_dim=64", "model.proj_hidden=128",
        "model.pred_hidden=32", "train.batch_size=64", "train.log_every=1", "eval.monitor_samples=128",
        "eval.knn_train_samples=128", "eval.probe=false"]
QTINY = [*TINY, "model.backbone_kwargs.stem_width=8"]   # with the quickstart preset: resnet10t_mini at its 16-128 channels (named: kept, no notice)
FMNIST = ["--preset", "fmnist-matrixssl", *TINY, "train.epochs=2",   # the embedded sample (found or not, the full set):
          f"data.root={SAMPLE_FASHION_MNIST}"]                       # 300 images, 4 steps an epoch, checkpoints at 4 and 8


def mssl_train(*argv, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    "The console script, as a user runs it"
    return subprocess.run([str(BIN / "mssl-train"), *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)


def start(*argv, cwd=None, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mssl-train"), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=cwd, preexec_fn=preexec_fn)


def run_many(cases: dict, *, parallel: int = 4, timeout: float = 600) -> dict:
    "Run {id: argv} through the console script, `parallel` at a time; {id: CompletedProcess}"
    todo, running, done = list(cases.items()), {}, {}
    t0 = time.monotonic()
    while todo or running:
        while todo and len(running) < parallel:
            key, argv = todo.pop(0)
            running[key] = (argv, start(*argv))
        for key, (argv, p) in list(running.items()):
            if p.poll() is not None:
                out, err = p.communicate()
                done[key] = subprocess.CompletedProcess(argv, p.returncode, out, err)
                del running[key]
        if time.monotonic() - t0 > timeout:
            for _, p in running.values(): p.kill()
            raise TimeoutError(f"still running after {timeout} s: {list(running)}")
        time.sleep(0.1)
    return done


def one_line_error(r, code: int, *words):
    "Exit code `code` and exactly one stderr line, holding every one of `words`"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr[-3000:]}"
    for w in words: assert w in lines[0], (w, lines[0])
    assert "Traceback" not in r.stderr
    return lines[0]


def tree_digest(path: Path) -> dict:
    "{relative path: sha1} of every file under `path`"
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def finite_weights(state: dict) -> bool:
    "No non-finite or blown-up tensor (the rule of hooks.check_weights: 1e6, running variances 1e12)"
    limit = lambda k: MAX_WEIGHT ** 2 if k.endswith("running_var") else MAX_WEIGHT
    return all(bool(torch.isfinite(v).all()) and float(v.abs().max()) <= limit(k)
               for k, v in state["model"].items() if v.is_floating_point() and v.numel())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def finished(work):
    "A finished tiny run of the fmnist-matrixssl preset (checkpoints at steps 4 and 8), and its command's output"
    r = mssl_train(*FMNIST, "--output", work / "A")
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "A", r


@pytest.fixture(scope="module")
def bad_input(work, finished):
    "Every case that must end before training, started together; {case: CompletedProcess}, and the finished run's digest before"
    A, _ = finished
    before = tree_digest(A)
    state = load_checkpoint(A / "checkpoints" / "step_00000008.pt")
    other = json.loads(json.dumps(state["config"]))
    other["model"]["method"] = "simclr"
    save_checkpoint(work / "simclr.pt", {**state, "config": other})               # another method's checkpoint
    wide = json.loads(json.dumps(state["config"]))
    wide["model"]["backbone"] = "resnet18"
    save_checkpoint(work / "resnet18.pt", {**state, "config": wide})              # another backbone's checkpoint
    data = (A / "checkpoints" / "step_00000008.pt").read_bytes()
    (work / "truncated.pt").write_bytes(data[: len(data) // 3])
    torch.save({"model": {}, "config": {}, "payload": subprocess.Popen}, work / "code.pt")   # a pickle that refers to code
    (work / "bad.yaml").write_text("train: {epochs: 3\n  batch_size: [\n")
    (work / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (work / "a-file").write_text("not a folder")
    fresh = lambda name: ["--output", work / "fresh" / name]
    cases = {
        "reuse_explicit_output":   [*FMNIST, "--output", A],
        "keep_checkpoints_0":      [*FMNIST, "train.keep_checkpoints=0", *fresh("keep0")],
        "eval_every_0":            [*FMNIST, "eval.every=0", *fresh("every0")],
        "log_every_0":             [*FMNIST, "train.log_every=0", *fresh("log0")],
        "knn_k_0":                 [*FMNIST, "eval.knn_k=0", *fresh("k0")],
        "knn_temperature_0":       [*FMNIST, "eval.knn_temperature=0", *fresh("t0")],
        "nan_lr":                  [*FMNIST, "optim.base_lr=.nan", *fresh("nan")],
        "in_chans_2":              [*FMNIST, "data.in_chans=2", *fresh("c2")],
        "resume_changed_batch":    [*FMNIST, "train.batch_size=32", "--resume", "auto", "--output", A],
        "float_1e-3":              [*FMNIST, "optim.base_lr=1e-3", "--dry-run", *fresh("f")],
        "invalid_yaml_config":     [*FMNIST, "--config", work / "bad.yaml", *fresh("y1")],
        "invalid_yaml_override":   [*FMNIST, "train.epochs=[1", *fresh("y2")],
        "truncated_checkpoint":    [*FMNIST, "--resume", work / "truncated.pt", *fresh("tr")],
        "other_method_checkpoint": [*FMNIST, "--resume", work / "simclr.pt", *fresh("om")],
        "other_backbone_checkpoint": [*FMNIST, "--resume", work / "resnet18.pt", *fresh("ob")],
        "code_pickle_checkpoint":  [*FMNIST, "--resume", work / "code.pt", *fresh("cp")],
        "output_under_file":       [*FMNIST, "--output", work / "a-file" / "run"],
        "nproc_abc":               [*FMNIST, "--nproc_per_node", "abc", *fresh("np")],
        "config_binary":           [*FMNIST, "--config", work / "binary.yaml", *fresh("cb")],
        "config_directory":        [*FMNIST, "--config", work, *fresh("cd")],
    }
    return run_many(cases), before


# ---------------------------------------------------------------- data loss

def test_reusing_an_explicit_output_is_refused_and_the_old_run_is_untouched(bad_input, finished):
    results, before = bad_input
    one_line_error(results["reuse_explicit_output"], 2, "already holds a run", "--resume auto", "--output")
    A, _ = finished
    assert tree_digest(A) == before, "a refused run changed the earlier run's files"


def test_preset_default_output_goes_to_a_numbered_sibling(tmp_path):
    first = mssl_train("--preset", "quickstart", *QTINY, "train.epochs=1", "train.max_steps=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = tree_digest(tmp_path / "runs" / "quickstart")
    second = mssl_train("--preset", "quickstart", *QTINY, "train.epochs=1", "train.max_steps=1", cwd=tmp_path)
    line = one_line_error(second, 0, "runs/quickstart holds an earlier run", "runs/quickstart-2", "--resume auto")
    assert "run directory: runs/quickstart-2" in second.stdout
    assert tree_digest(tmp_path / "runs" / "quickstart") == before
    for d in ("quickstart", "quickstart-2"):
        rec = read_run(tmp_path / "runs" / d)
        assert rec.summary["steps"] == 1 and load_checkpoint(rec.checkpoints[0])["step"] == 1, line


def test_stale_checkpoint_and_truncated_newest_resume_from_the_last_good_one(work, finished):
    A, _ = finished
    B = work / "B"
    shutil.copytree(A, B)
    stale = B / "checkpoints" / "step_99999999.pt"
    stale.write_bytes(b"someone else's file")
    newest = B / "checkpoints" / "step_00000008.pt"
    newest.write_bytes(newest.read_bytes()[:1000])                  # a crash mid-copy
    r = mssl_train(*FMNIST, "train.epochs=3", "--resume", "auto", "--output", B)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {B}/checkpoints/step_00000004.pt (epoch 1, step 4)" in r.stdout
    assert stale.read_bytes() == b"someone else's file", "a file the run did not write was touched"
    kept = checkpoint_paths(B)
    assert [p.name for p in kept] == ["step_00000012.pt", "step_00000008.pt"]
    assert all(load_checkpoint(p)["step"] == int(p.stem[5:]) for p in kept)   # step 8 rewritten whole
    rec = read_run(B)
    assert rec.summary["steps"] == 12 and [m["step"] for m in rec.metrics][-8:] == list(range(5, 13))


def test_keep_checkpoints_0_is_refused_before_anything_is_written(bad_input, work):
    one_line_error(bad_input[0]["keep_checkpoints_0"], 2, "train.keep_checkpoints", ">= 1")
    assert not (work / "fresh" / "keep0").exists()


@pytest.mark.parametrize("case,key", [("eval_every_0", "eval.every"), ("log_every_0", "train.log_every")])
def test_options_that_fail_later_are_refused_at_config_time(bad_input, work, case, key):
    one_line_error(bad_input[0][case], 2, key, ">= 1")
    assert not (work / "fresh").exists() or not any((work / "fresh").glob("*/config.yaml"))


def test_torn_metrics_line_then_resume(work):
    "max_steps mid-epoch: evaluated and labelled at its own step; a torn metrics line, then --resume auto: clean logs"
    M = work / "M"
    r = mssl_train(*FMNIST, "train.max_steps=2", "--output", M)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(train.max_steps=2 reached)" in r.stdout and "at step 2: k-NN accuracy" in r.stdout
    rec = read_run(M)
    assert (rec.summary["steps"], rec.summary["eval_step"], rec.epochs[-1]["step"]) == (2, 2, 2)
    with open(M / "metrics.jsonl", "a") as f: f.write('{"step": 3, "epoch": 0, "lo')     # the crash tore a line
    r = mssl_train(*FMNIST, "--resume", "auto", "--output", M)
    assert r.returncode == 0, r.stderr[-3000:]
    rows, skipped = read_jsonl(M / "metrics.jsonl")
    assert skipped == 1 and [m["step"] for m in rows] == list(range(1, 9))
    rec = read_run(M)
    assert rec.summary["steps"] == 8 and rec.summary["eval_step"] == 8
    assert all(json.loads(l) for l in (M / "metrics.jsonl").read_text().splitlines()[3:])   # every line after the fragment parses


def test_full_disk_names_the_last_good_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, capsys):
    "In-process: the second checkpoint's fsync fails with ENOSPC"
    from mssl_workbench.cli import train as cli
    real_fsync = os.fsync
    def full_disk(fd):
        if "step_00000008" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", full_disk)
    torch.set_num_threads(1)
    code = cli.main([*FMNIST, "--output", str(tmp_path / "D")])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "no space left on device" in lines[0] and str(tmp_path / "D" / "checkpoints" / "step_00000004.pt") in lines[0]
    assert "free space or set --output to another disk" in lines[0]
    assert [p.name for p in (tmp_path / "D" / "checkpoints").iterdir() if p.name != "manifest.jsonl"] == ["step_00000004.pt"]
    assert not list((tmp_path / "D").rglob("*.tmp"))
    path, state = latest_checkpoint(tmp_path / "D")
    assert path.name == "step_00000004.pt" and finite_weights(state)


# ---------------------------------------------------------------- silent wrong results

def test_divergence_without_nan_stops_with_a_clear_message(work):
    D = work / "diverge"
    r = mssl_train(*FMNIST, "optim.base_lr=1000000.0", "train.checkpoint_every_steps=1", "--output", D)
    # it never produces a NaN and its parameters stay small: BatchNorm's running statistics show the blow-up
    line = one_line_error(r, 1, "stopped: weights diverged at step", "last good checkpoint: ", "lower optim.base_lr")
    kept = checkpoint_paths(D)
    assert kept and str(kept[0]) in line and all(finite_weights(load_checkpoint(p)) for p in kept)
    assert "done:" not in r.stdout and not (D / "summary.json").exists()
    rows, skipped = read_jsonl(D / "metrics.jsonl")
    assert skipped == 0 and all(math.isfinite(m["loss"]) for m in rows)


def test_fmnist_preset_says_which_data_it_used(finished):
    A, r = finished
    data = read_run(A).summary["data"]
    line = next(l for l in r.stdout.splitlines() if l.startswith("data: "))
    assert f"train {data['train']['images']} images from {data['train']['source']}" in line
    assert data["train"]["images"] == 300 and data["val"]["images"] > 0 and "at step 8:" in r.stdout
    assert str(SAMPLE_FASHION_MNIST) in data["train"]["source"]


@pytest.mark.parametrize("case,words", [
    ("knn_k_0", ["eval.knn_k", ">= 1"]),
    ("knn_temperature_0", ["eval.knn_temperature", "> 0"]),
    ("nan_lr", ["optim.base_lr", "finite number > 0", "nan"]),
    ("in_chans_2", ["data.in_chans", "1 or 3"]),
])
def test_out_of_range_options_are_refused(bad_input, case, words):
    one_line_error(bad_input[0][case], 2, *words)


def test_resume_with_a_changed_batch_size_is_refused(bad_input, finished):
    results, before = bad_input
    one_line_error(results["resume_changed_batch"], 2, "cannot resume", "train.batch_size: 64 -> 32", "fresh --output")
    assert tree_digest(finished[0]) == before


def test_float_spellings_in_overrides(bad_input):
    r = bad_input[0]["float_1e-3"]
    assert r.returncode == 0 and "base_lr: 0.001" in r.stdout, r.stderr


# ---------------------------------------------------------------- one line instead of a traceback

@pytest.mark.parametrize("case,words", [
    ("invalid_yaml_config", ["bad.yaml", "not valid YAML"]),
    ("invalid_yaml_override", ["train.epochs", "not valid YAML"]),
    ("truncated_checkpoint", ["truncated.pt", "truncated or damaged", "older checkpoint"]),
    ("other_method_checkpoint", ["cannot resume", "model.method: 'simclr' -> 'matrix_ssl'", "fresh --output"]),
    ("other_backbone_checkpoint", ["cannot resume", "model.backbone: 'resnet18' -> 'resnet10t_mini'"]),
    ("code_pickle_checkpoint", ["code.pt", "refusing to load", "only checkpoints written by mssl-workbench"]),
    ("output_under_file", ["a-file is a file, not a folder", "another --output"]),
    ("nproc_abc", ["--nproc_per_node 'abc'", "integer >= 1"]),
    ("config_binary", ["binary.yaml", "not a text file"]),
    ("config_directory", ["is a folder", "pass a YAML file"]),
])
def test_bad_input_is_one_line(bad_input, work, case, words):
    line = one_line_error(bad_input[0][case], 2, *words)
    assert "weights_only" not in line                 # never torch's advice to turn the safety off
    fresh = work / "fresh"
    assert not fresh.exists() or not any(fresh.rglob("config.yaml")), "a refused run wrote a run directory"
