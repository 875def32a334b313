"""`mssl-study` end to end (issue 29): a 3-method x 2-seed toy study on a generated ImageNet-layout folder, through the
real command.

- local executor: `kill -9` of the study in the middle of its second cell loses only that cell (the first cell's file is
  kept byte for byte, no console script outlives the study, the cell's lock is free again); then two `mssl-study`
  processes finish the study on the same folder, and no cell runs in both; `--dry-run` and `status` then report
  every cell done;
- the SLURM path through submitit's local executor (`slurm: {cluster: local}`): every cell a job that writes its own
  file; one job is preempted (submitit's SIGUSR2) in the middle of its training, requeues, and its mssl-train continues
  from the checkpoint (`--resume auto`);
- bad study files (an unknown method, an empty rate grid, missing data, a budget of 0, an output folder that holds
  another study) end in one stderr line naming the fix, exit 2, before any cell runs.

Each cell trains 2 steps (the SLURM study 6) of a quarter-width ResNet on 32-px images of 4 classes, and runs the linear
probe (validation and test) and k-NN, about 17 s on one thread; the file runs in about 5 minutes.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from console import BIN, ENV, one_line
from mssl_workbench.cli.train import descendants
from mssl_workbench.data.folders import make_imagefolder
from mssl_workbench.engine.rundir import read_run

pytestmark = pytest.mark.slow

# the console script once the package is installed (`make install`); its module otherwise (the same `main`)
STUDY = [str(BIN / "mssl-study")] if (BIN / "mssl-study").exists() else [sys.executable, "-m", "mssl_workbench.cli.study"]
CELLS = {f"{m}-lr{lr}-s{s}" for m, lr in (("simclr", "0.3"), ("vicreg", "0.05"), ("matrix_ssl", "0.5")) for s in (0, 1)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    "An ImageNet-layout folder: 4 classes, 8 training, 4 validation and 4 test JPEGs each, 32 px"
    return make_imagefolder(tmp_path_factory.mktemp("data") / "tree", per_class={"train": 8, "val": 4, "test": 4}, num_classes=4, size=32)


def toy_study(folder: Path, tree: Path, name: str = "toy", budget: dict | None = None, **extra) -> Path:
    "Write a 3-method x 2-seed study of `tree` (one rate each) into `folder`; its output is folder/out"
    d = {"name": name, "output": "out",
         "data": {"dataset": "imagefolder", "root": str(tree), "test_split": "test", "image_size": 32, "in_chans": 3},
         "methods": [{"name": "simclr"}, {"name": "vicreg"}, {"name": "matrix_ssl"}],
         "recipe": {"common": ["model.backbone=resnet10t_mini", "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 4}",
                               "train.batch_size=16", "eval.monitor_samples=16", "eval.knn_train_samples=32", "eval.info_samples=16",
                               "train.quiet=true"]},
         "budgets": [budget or {"name": "b1", "epochs": 1, "max_steps": 2, "eval_every": 1}],
         "rates": {"factors": [1.0]}, "seeds": {"base": [0, 1]},
         "protocols": {"linear": {"preset": "fmnist-sample", "options": ["epochs=1"]}, "knn": {"options": ["ks=[5]"]}}, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return folder / "study.yaml"


def start(*argv) -> subprocess.Popen:
    return subprocess.Popen([*STUDY, *map(str, argv)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def study(*argv, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*STUDY, *map(str, argv)], env=ENV, capture_output=True, text=True, timeout=timeout)


def cell_files(out: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(out.glob("b1/ssl/*.json"))}


def written(log: str) -> set[str]:
    "The cells a study process wrote (its `ssl/<cell>: <numbers>` lines)"
    return {l.split(":")[0].split("/")[1] for l in log.splitlines() if l.startswith("ssl/") and ": " in l}


def wait_for(condition, proc, what: str, timeout: float = 300):
    t0 = time.monotonic()
    while not condition():
        assert proc.poll() is None, f"the study ended before {what}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() - t0 < timeout, f"no {what} after {timeout} s"
        time.sleep(0.1)


def our_processes(marker: str) -> list[int]:
    "Live processes whose command line mentions `marker` (the test's own folder)"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try: cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError: continue
        if marker in cmd: pids.append(int(d.name))
    return pids


def test_console_script_is_declared():
    assert "mssl-study=mssl_workbench.cli.study:main" in (Path(__file__).resolve().parents[1] / "settings.ini").read_text()


def test_local_study_survives_kill_9_and_two_processes_share_it(tree, tmp_path):
    path, out, work = toy_study(tmp_path / "s", tree), tmp_path / "s" / "out", tmp_path / "work"
    # kill -9 in the middle of the second cell: the first cell's file stays, the second is lost, nothing keeps running
    p = start("run", path, "--workdir", work / "first")
    wait_for(lambda: len(cell_files(out)) == 1, p, "first cell")
    first = cell_files(out)
    wait_for(lambda: len(list((work / "first").glob("*/run/config.yaml"))) == 2, p, "second cell's training")
    p.send_signal(signal.SIGKILL); p.wait(timeout=30)
    assert cell_files(out) == first, "killed during the second cell: only the first cell's file may exist, unchanged"
    time.sleep(1)
    assert not our_processes(str(work / "first")), "a console script of the killed study kept running"
    locks = list((out / ".locks").rglob("*.lock"))
    assert len(locks) == 2
    for lock in locks:                                           # the kernel dropped the killed process's lock
        assert subprocess.run([sys.executable, "-c", f"import fcntl; fcntl.flock(open({str(lock)!r}), fcntl.LOCK_EX | fcntl.LOCK_NB)"]).returncode == 0

    # two processes finish it on the same folder: every cell once, the first cell untouched
    a, b = start("run", path, "--workdir", work / "a"), start("run", path, "--workdir", work / "b", "--parallel", "2")
    logs = [p.communicate(timeout=900)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, logs
    ran = [written(log) for log in logs]
    assert ran[0] and ran[1], logs                               # both worked
    assert not ran[0] & ran[1], logs                             # no cell twice
    assert ran[0] | ran[1] | set(first) == CELLS, logs
    files = cell_files(out)
    assert set(files) == CELLS and files[next(iter(first))] == first[next(iter(first))]
    for name, body in files.items():
        r = yaml.safe_load(body)
        assert not r.get("failed"), r
        assert 0 <= r["linear"] <= 1 and 0 <= r["val_linear"] <= 1 and 0 <= r["knn"] <= 1 and r["spectra"]["backbone"]["values"]
        assert r["command"].startswith("mssl-train --preset fmnist-") and "val_split=test" in r["command"]
    # the study is complete: --dry-run and status say so, and a rerun writes nothing
    r = study("run", path, "--dry-run")
    assert r.returncode == 0 and [l.split()[0] for l in r.stdout.splitlines()[:-1]] == ["done"] * 6, r.stdout
    r = study("status", path)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "6 done", r.stdout
    r = study("run", path, "--workdir", work / "c")
    assert r.returncode == 0 and "0 cell(s) written" in r.stdout and cell_files(out) == files, r.stdout


def test_slurm_path_through_submitits_local_executor(tree, tmp_path):
    "Every cell a job; one job preempted mid-training requeues, and its mssl-train continues from the checkpoint"
    budget = {"name": "b1", "epochs": 3, "max_steps": 6, "eval_every": 1, "overrides": ["train.checkpoint_every_steps=1", "train.log_every=1"]}
    path = toy_study(tmp_path / "s", tree, name="toy-slurm", budget=budget, slurm={"cluster": "local", "time": 20})
    out = tmp_path / "s" / "out"
    p = start("run", path, "--executor", "slurm")
    runs = out / "runs" / "b1" / "ssl"
    metrics = lambda: [d for d in runs.glob("*/run/metrics.jsonl") if d.read_text().strip()]
    wait_for(lambda: metrics(), p, "a job's first training step")
    run_dir = metrics()[0].parent
    tasks = [pid for pid in descendants(p.pid) if str(run_dir.parent) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    job = next(pid for pid in descendants(p.pid) if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()
               and any(t in descendants(pid) for t in tasks))
    os.kill(job, signal.SIGUSR2)                                 # submitit's preemption / time-limit signal
    log, _ = p.communicate(timeout=900)
    assert p.returncode == 0, log
    assert written(log) == CELLS, log
    files = cell_files(out)
    assert set(files) == CELLS and not any(yaml.safe_load(b).get("failed") for b in files.values())
    preempted = yaml.safe_load(files[run_dir.parent.name])
    assert preempted["steps"] == 6 and "--resume auto" in preempted["command"]
    rec = read_run(run_dir)
    assert [m["step"] for m in rec.metrics if "loss" in m] == list(range(1, 7)), "the requeued job continued the run, each step once"
    logs = "".join(f.read_text() for f in (out / ".slurm").rglob("*_log.err"))
    stop = re.search(r"mssl-train: stopped by SIGUSR2 at step (\d+); checkpoint \S+; continue with --resume auto", logs)
    assert stop and int(stop.group(1)) < 6 and "this job is preempted" in logs, logs[-3000:]   # then requeued: the run went on to step 6
    r = study("status", path)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "6 done", r.stdout


def test_bad_study_files_are_one_line_naming_the_fix(tree, tmp_path):
    def bad(edit, *needles):
        folder = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        path = toy_study(folder, tree)
        d = yaml.safe_load(path.read_text())
        edit(d, folder)
        path.write_text(yaml.safe_dump(d))
        one_line(study("run", path), 2, *needles)
        assert not (folder / "out" / "b1").exists()                  # nothing ran
    bad(lambda d, f: d["methods"].append({"name": "simclrr"}), "methods[3] (simclrr): unknown method 'simclrr'", "simclr")
    bad(lambda d, f: d["rates"].update(factors=[]), "rates.factors=[] is not allowed", "non-empty list of positive numbers")
    bad(lambda d, f: d["data"].update(root=str(f / "missing")), "data.root=", "no such folder")
    bad(lambda d, f: d["data"].update(test_split="holdout"), "no 'holdout' split", "ImageNet layout")
    bad(lambda d, f: d["budgets"][0].update(epochs=0), "budgets[0].epochs=0 is not allowed: it must be an integer >= 1")
    bad(lambda d, f: d.update(seeds={"base": []}), "seeds.base=[] is not allowed")
    bad(lambda d, f: d.pop("methods"), "methods: empty; list at least one")

    def other_study(d, f):                                           # the output folder belongs to another study
        other = toy_study(f / "other", tree, name="another")
        yaml_other = yaml.safe_load(other.read_text()); yaml_other["output"] = str(f / "out")
        other.write_text(yaml.safe_dump(yaml_other))
        assert study("run", other, "--max-minutes", "0.0001").returncode == 0    # claims the folder, runs (at most) one cell
    bad(other_study, "holds study 'another', not 'toy'", "set output: to another folder")
    r = study("init", tmp_path / "bad1" / "study.yaml")
    one_line(r, 2, "the file exists")
