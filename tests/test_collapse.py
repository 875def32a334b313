"""Collapse is a result to report (issue 22, part 2): a quickstart at a learning rate that collapses the
features ends with exit 0, one warning line naming the evidence and the fix, `collapsed: true` with the step in
summary.json, and the dashboard and `mssl-spectrum` show it; a healthy tiny run is not flagged.

Both runs are real `mssl-train` runs of the quickstart preset, cut to 15 steps on 1000 images (seconds each)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mssl_workbench.engine.hooks import COLLAPSE_ERANK
from mssl_workbench.engine.rundir import read_jsonl, read_run

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
ENV.pop("CI", None)
TINY = ["--preset", "quickstart", "--quiet", "train.epochs=1", "data.fraction=0.1", "train.batch_size=64", "eval.every=1",
        "eval.monitor_samples=256", "eval.knn_train_samples=512", "eval.info_samples=0", "train.checkpoint_every=0"]


def mssl(command: str, *argv, timeout=600) -> subprocess.CompletedProcess:
    "A console script, as a user runs it"
    return subprocess.run([str(BIN / command), *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "{name: (CompletedProcess, run directory)}: the quickstart at base_lr=5e4 (the issue's collapse) and at its own rate"
    root = tmp_path_factory.mktemp("collapse")
    out = {}
    for name, extra in {"collapsed": ["optim.base_lr=5e4"], "healthy": []}.items():
        r = mssl("mssl-train", *TINY, *extra, "--output", root / name)
        out[name] = (r, root / name)
    return out


def test_collapsed_run_exits_0_with_one_warning(runs):
    r, run_dir = runs["collapsed"]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    warnings = [l for l in r.stderr.splitlines() if "collapsed" in l]
    assert len(warnings) == 1, r.stderr[-3000:]
    line = warnings[0]
    assert line.startswith("warning: the representation collapsed at step "), line
    assert "effective rank" in line and "k-NN" in line and "chance 10.0%" in line, line
    assert "likely fix: lower optim.base_lr (now 50000)" in line and "summary.json" in line, line
    assert "done:" in r.stdout   # the run is a result: it still reports what it measured


def test_collapsed_run_is_recorded_with_its_step(runs):
    _, run_dir = runs["collapsed"]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["collapsed"] is True
    c = s["collapse"]
    epochs, _ = read_jsonl(run_dir / "epochs.jsonl")
    low = lambda r: min(r["monitor"]["backbone"]["erank"], r["monitor"]["embedding"]["erank"]) < COLLAPSE_ERANK
    first = next(r["step"] for r in epochs if r["step"] > 0 and low(r))
    assert c["step"] == first and c["eval_step"] == s["steps"] == epochs[-1]["step"]
    assert min(c["erank"], c["embedding_erank"]) < COLLAPSE_ERANK and c["spaces"]
    assert c["knn_acc"] == s["knn_acc"] and c["chance"] == pytest.approx(0.1) and c["dim"] > 100
    assert not low(epochs[0])   # the untrained network was not collapsed: the recipe did it


def test_healthy_run_is_not_flagged(runs):
    r, run_dir = runs["healthy"]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "collapsed" not in r.stderr, r.stderr[-3000:]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["collapsed"] is False and s["collapse"] is None
    assert s["erank"] > 10 * COLLAPSE_ERANK, s["erank"]   # far from the threshold, not just above it


def test_spectrum_report_shows_the_collapse(runs, tmp_path):
    (_, collapsed), (_, healthy) = runs["collapsed"], runs["healthy"]
    step = json.loads((collapsed / "summary.json").read_text())["collapse"]["step"]
    r = mssl("mssl-spectrum", collapsed, healthy, "-o", tmp_path / "report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    page = (tmp_path / "report.html").read_text()
    assert f"⚠ collapsed: <code>collapsed</code> at step {step}" in page
    assert f"yes, at step {step}" in page and "<td>no</td>" in page   # the healthy run: "no"


def test_dashboard_shows_the_collapse(runs):
    from mssl_workbench.reports.dashboard import Dashboard
    _, collapsed = runs["collapsed"]
    step = json.loads((collapsed / "summary.json").read_text())["collapse"]["step"]
    d = Dashboard(collapsed.parent)
    labels = sorted(label for label, _ in d.runs_select.options)
    assert labels == [f"collapsed ⚠ collapsed at step {step}", "healthy"], labels
    assert f"yes, at step {step}" in d.table.value and "⚠ collapsed" in d.table.value
    assert not d.skipped_runs
