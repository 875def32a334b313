"""`mssl-study` end to end (issue 29): a 3-method x 2-seed toy study on a generated ImageNet-layout folder, through the
real command.

- local executor: `kill -9` of the study in the middle of its second cell loses only that cell (the first cell's file is
  kept byte for byte, no console script outlives the study, the cell's lock is free again); then two `mssl-study`
  processes finish the study on the same folder, and no cell runs in both; `--dry-run` and `status` then report
  every cell done; `mssl-study report` writes one page that headless Chromium opens without an error or a request
  leaving the file, showing each section's table and each figure drawn;
- the SLURM path through submitit's local executor (`slurm: {cluster: local}`): every cell a job that writes its own
  file; one job is preempted (submitit's SIGUSR2) in the middle of its training, requeues, and its mssl-train continues
  from the checkpoint (`--resume auto`);
- bad study files (an unknown method, an empty rate grid, missing data, a budget of 0, an output folder that holds
  another study) end in one stderr line naming the fix, exit 2, before any cell runs.

The local study also has a published-arm row (SimCLR) and a later budget (4 steps, one seed of SimCLR), so that its
report has every section. Each cell trains 2 steps (the SLURM study 6) of a quarter-width ResNet on 32-px images of 4
classes, and runs the linear probe (validation and test) and k-NN, about 17 s on one thread; the file runs in about 6
minutes.
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
from procs import our_processes
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


def toy_study(folder: Path, tree: Path, name: str = "toy", budget: dict | None = None, methods: list | None = None, budgets: list | None = None,
              **extra) -> Path:
    "Write a 3-method x 2-seed study of `tree` (one rate each) into `folder`; its output is folder/out"
    d = {"name": name, "output": "out",
         "data": {"dataset": "imagefolder", "root": str(tree), "test_split": "test", "image_size": 32, "in_chans": 3},
         "methods": [{"name": "simclr"}, {"name": "vicreg"}, {"name": "matrix_ssl"}, *(methods or [])],
         "recipe": {"common": ["model.backbone=resnet10t_mini", "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 4}",
                               "train.batch_size=16", "eval.monitor_samples=16", "eval.knn_train_samples=32", "eval.info_samples=16",
                               "train.quiet=true"]},
         "budgets": [budget or {"name": "b1", "epochs": 1, "max_steps": 2, "eval_every": 1}, *(budgets or [])],
         "rates": {"factors": [1.0]}, "seeds": {"base": [0, 1], "reference": "matrix_ssl"},
         "protocols": {"linear": {"preset": "fmnist-sample", "options": ["epochs=1"]}, "knn": {"options": ["ks=[5]"]}}, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return folder / "study.yaml"


def start(*argv) -> subprocess.Popen:
    return subprocess.Popen([*STUDY, *map(str, argv)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def study(*argv, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*STUDY, *map(str, argv)], env=ENV, capture_output=True, text=True, timeout=timeout)


def cell_files(out: Path) -> dict[str, bytes]:
    "family/cell -> the bytes of its file"
    return {f"{p.parent.name}/{p.stem}": p.read_bytes() for p in sorted(out.glob("b1/*/*.json"))}


def written(log: str) -> set[str]:
    "The cells a study process wrote (its `<family>/<cell>: <numbers>` lines)"
    return {l.split(": ")[0] for l in log.splitlines() if re.match(r"^[\w.-]+/\S+: ", l)}


def wait_for(condition, proc, what: str, timeout: float = 300):
    t0 = time.monotonic()
    while not condition():
        assert proc.poll() is None, f"the study ended before {what}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() - t0 < timeout, f"no {what} after {timeout} s"
        time.sleep(0.1)


def test_console_script_is_declared():
    assert "mssl-study=mssl_workbench.cli.study:main" in (Path(__file__).resolve().parents[1] / "settings.ini").read_text()


LOCAL = {f"ssl/{c}" for c in CELLS} | {"published/simclr-lr0.3-s0", "published/simclr-lr0.3-s1", "b2/simclr-lr0.3-s0"}


@pytest.fixture(scope="module")
def local_study(tree, tmp_path_factory):
    "The local study, killed with kill -9 in its second cell, then finished by two processes at once: (study file, output, what happened)"
    tmp = tmp_path_factory.mktemp("local")
    path = toy_study(tmp / "s", tree, methods=[{"name": "simclr", "arm": "published"}],
                     budgets=[{"name": "b2", "epochs": 2, "max_steps": 4, "eval_every": 1, "seeds": {"simclr": 1}}])
    out, work = tmp / "s" / "out", tmp / "work"
    p = start("run", path, "--workdir", work / "first")
    wait_for(lambda: len(cell_files(out)) == 1, p, "first cell")
    first = cell_files(out)
    wait_for(lambda: len(list((work / "first").glob("*/run/config.yaml"))) == 2, p, "second cell's training")
    p.send_signal(signal.SIGKILL); p.wait(timeout=30)
    after_kill, locks = cell_files(out), list((out / ".locks").rglob("*.lock"))
    time.sleep(1)
    left = our_processes(str(work / "first"))
    a, b = start("run", path, "--workdir", work / "a"), start("run", path, "--workdir", work / "b", "--parallel", "2")
    logs = [p.communicate(timeout=900)[0] for p in (a, b)]
    return {"path": path, "out": out, "work": work, "first": first, "after_kill": after_kill, "locks": locks, "left": left,
            "codes": (a.returncode, b.returncode), "logs": logs}


def test_local_study_survives_kill_9_and_two_processes_share_it(local_study):
    s = local_study
    # kill -9 in the middle of the second cell: the first cell's file stays, the second is lost, nothing keeps running
    assert len(s["first"]) == 1 and s["after_kill"] == s["first"], "killed during the second cell: only the first cell's file may exist"
    assert not s["left"], "a console script of the killed study kept running"
    assert len(s["locks"]) == 2
    for lock in s["locks"]:                                      # the kernel dropped the killed process's lock
        assert subprocess.run([sys.executable, "-c", f"import fcntl; fcntl.flock(open({str(lock)!r}), fcntl.LOCK_EX | fcntl.LOCK_NB)"]).returncode == 0
    # two processes finished it on the same folder: every cell once, the first cell untouched
    assert s["codes"] == (0, 0), s["logs"]
    ran = [written(log) for log in s["logs"]]
    assert ran[0] and ran[1], s["logs"]                          # both worked
    assert not ran[0] & ran[1], s["logs"]                        # no cell twice
    assert ran[0] | ran[1] | set(s["first"]) == LOCAL, s["logs"]
    files = cell_files(s["out"])
    assert set(files) == LOCAL and all(files[k] == v for k, v in s["first"].items())
    for name, body in files.items():
        r = yaml.safe_load(body)
        assert not r.get("failed"), r
        assert 0 <= r["linear"] <= 1 and 0 <= r["val_linear"] <= 1 and 0 <= r["knn"] <= 1 and r["spectra"]["backbone"]["values"]
        assert r["command"].startswith("mssl-train --preset fmnist-") and "val_split=test" in r["command"]
        assert r["steps"] == (4 if name.startswith("b2/") else 2) and r["trajectory"][-1]["info"]["embedding"]["mi"] is not None
    assert "data.augment=small" not in yaml.safe_load(files["published/simclr-lr0.3-s0"])["overrides"]   # the method's own augmentation
    # the study is complete: --dry-run and status say so, and a rerun writes nothing
    r = study("run", s["path"], "--dry-run")
    assert r.returncode == 0 and [l.split()[0] for l in r.stdout.splitlines()[:-1]] == ["done"] * len(LOCAL), r.stdout
    r = study("status", s["path"])
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == f"{len(LOCAL)} done", r.stdout
    r = study("run", s["path"], "--workdir", s["work"] / "c")
    assert r.returncode == 0 and "0 cell(s) written" in r.stdout and cell_files(s["out"]) == files, r.stdout


def test_report_opens_in_the_browser_with_every_table_and_figure(local_study, tmp_path):
    from test_dashboard_browser import ensure_browser, launch
    r = study("report", local_study["path"])
    report = local_study["out"] / "report.html"
    assert r.returncode == 0 and r.stdout.strip() == f"wrote {report}", r.stdout + r.stderr
    sections = ["Verdicts", "Methods", "Shared and published arm", "Accuracy against budget (b1 → b2)", "Rate sweeps", "k-NN during training",
                "Eigenspectra of the chosen runs", "Information flow of the chosen runs", "Accuracy against effective rank", "Machinery"]
    ensure_browser()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        ctx = launch(pw, tmp_path)
        try:
            page, problems = ctx.new_page(), []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda q: problems.append(f"request: {q.url}") if not q.url.startswith(("file:", "data:", "blob:")) else None)
            page.goto(report.as_uri())
            assert page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)") == sections
            page.wait_for_function("() => [...document.querySelectorAll('.figure')].every(f => f.querySelector('.main-svg'))", timeout=60_000)
            figures = page.evaluate("() => [...document.querySelectorAll('.figure')].map(f => [f.dataset.name, "
                                    "f.querySelector('.js-plotly-plot').data.length])")
            assert [n for n, _ in figures] == ["methods", "budget-b2", "sweep", "trajectories", "spectra", "information", "rank"], figures
            assert all(traces > 0 for _, traces in figures), figures
            tables = page.evaluate("() => [...document.querySelectorAll('table')].map(t => t.querySelectorAll('tbody tr').length)")
            assert tables == [2, 3, 1, len(LOCAL)], tables          # verdicts, methods, arms, cells
            info = page.evaluate("() => document.getElementById('fig-information').data.map(t => t.name)")
            assert any("matrix_ssl" in n for n in info) and any("simclr" in n for n in info), info
            assert "Matrix-SSL ≥ SimCLR" in page.inner_text("#verdicts")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert not problems, problems
        finally:
            ctx.close()


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
    assert written(log) == {f"ssl/{c}" for c in CELLS}, log
    files = cell_files(out)
    assert set(files) == {f"ssl/{c}" for c in CELLS} and not any(yaml.safe_load(b).get("failed") for b in files.values())
    preempted = yaml.safe_load(files[f"ssl/{run_dir.parent.name}"])
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
        from mssl_workbench.cli.study import check_folder                # what a first `mssl-study run` of it does
        from mssl_workbench.study.cells import Study
        from mssl_workbench.study.schema import read_study
        check_folder(Study(read_study(other)), claim=True)
    bad(other_study, "holds study 'another', not 'toy'", "set output: to another folder")
    r = study("init", tmp_path / "bad1" / "study.yaml")
    one_line(r, 2, "the file exists")
