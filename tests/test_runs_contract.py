"""The run-directory contract on real artefacts: a run made by the real `mssl-train` command is opened by
`mssl-spectrum` and by the dashboard's data layer, and what they read — method label, epochs, metric values,
checkpoint list, the information monitor's matrix entropies, joint entropy and MI — is what training wrote, and the recorded
information values are recomputed from the final checkpoint. (The 2-process gloo run of tests/test_train.py is checked the
same way.)"""
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from mssl_workbench.reports.dashboard import Dashboard, find_runs
from mssl_workbench.core.metrics import INFO_KEYS
from mssl_workbench.engine.rundir import FORMAT, SPACES, checkpoint_paths, read_run


def _lines(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def check_run_contract(run_dir: Path, *, method: str):
    "What every reader sees of `run_dir` equals what the training engine wrote into it"
    run_dir = Path(run_dir)
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (written["format"], written["method"], written["model"]["method"]) == (FORMAT, method, method)
    rec = read_run(run_dir)
    assert rec.method == method and rec.kind == "image" and rec.skipped == {}
    assert rec.metrics == _lines(run_dir / "metrics.jsonl")
    assert rec.epochs == _lines(run_dir / "epochs.jsonl") and [e["epoch"] for e in rec.epochs] == [e["epoch"] for e in _lines(run_dir / "epochs.jsonl")]
    on_disk = sorted((run_dir / "checkpoints").glob("step_*.pt"), reverse=True)
    assert rec.checkpoints == on_disk == checkpoint_paths(run_dir) and on_disk
    assert rec.summary["checkpoint"] == str(on_disk[0]) and rec.summary["method"] == method
    state = torch.load(on_disk[0], map_location="cpu", weights_only=True)
    assert state["step"] == rec.summary["steps"] == rec.metrics[-1]["step"]
    # the information monitor: every monitor pass, both spaces, the configured order and size, the proven bounds
    ev = written["eval"]
    m = min(ev["info_samples"], ev["monitor_samples"])
    for row in rec.epochs:
        info = row["info"]
        assert (info["alpha"], info["n_samples"], info["views"]) == (ev["info_alpha"], m, 2), info
        for space in SPACES:
            v = info[space]
            assert all(math.isfinite(v[k]) for k in INFO_KEYS), v
            assert max(v["h1"], v["h2"]) - 1e-9 <= v["joint"] <= math.log(m) + 1e-9 and v["mi"] <= min(v["h1"], v["h2"]) + 1e-9, v
    for space in SPACES:   # the one reader's views of the same lines
        for key in INFO_KEYS:
            assert rec.info(key, space) == ([e["epoch"] for e in rec.epochs], [e["info"][space][key] for e in rec.epochs])
        assert rec.final_info(space) == {"epoch": rec.epochs[-1]["epoch"], "step": rec.epochs[-1]["step"], "alpha": ev["info_alpha"],
                                         "n_samples": m, "views": 2, **rec.epochs[-1]["info"][space]}
    assert rec.summary["info"] == rec.epochs[-1]["info"]
    # the dashboard's data layer: it finds the run and labels it with its method
    dash = Dashboard(run_dir.parent)
    assert run_dir in find_runs(run_dir.parent)
    seen = dash.load(run_dir)
    assert seen.method == method and seen.epochs == rec.epochs and seen.spectra == rec.spectra
    panel = {t.name: t for t in dash.info_fig.data if t.name.startswith(f"{run_dir.name} ·")}
    assert list(panel[f"{run_dir.name} · mutual information"].y) == rec.info("mi")[1]
    assert list(panel[f"{run_dir.name} · joint entropy"].x) == rec.info("joint")[0]
    # the HTML report
    out = run_dir.parent / f"{run_dir.name}-report.html"
    r = subprocess.run([str(Path(sys.executable).parent / "mssl-spectrum"), str(run_dir), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    assert method in text and out.stat().st_size > 10_000
    assert "Matrix information of the embedding" in text and f"{rec.final_info()['mi']:.3f}" in text
    return rec


def recompute_information(run_dir: Path) -> dict:
    "The information monitor's numbers for the run's final checkpoint, recomputed outside training (same images, same views)"
    from types import SimpleNamespace
    from mssl_workbench.engine.distributed import DistInfo
    from mssl_workbench.engine.hooks import Monitor
    from mssl_workbench.engine.rundir import load_trained
    from mssl_workbench.engine.image import RunData
    model, cfg, _ = load_trained(run_dir)
    info = DistInfo()
    run = SimpleNamespace(cfg=cfg, model=model, info=info, data=RunData(cfg, info), extra_state={}, writer=None, step=1)
    mon = Monitor(); mon.before_fit(run)
    return mon.information(run, {})


def test_a_real_cli_run_reads_back_everywhere(tmp_path, console):
    out = tmp_path / "runs" / "byol"
    r = subprocess.run([console("mssl-train"), "--preset", "fmnist-byol", "--quiet", "--output", str(out),
                        "data.root=" + str(Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-sample"),
                        "data.fraction=0.03", "model.proj_hidden=64", "model.pred_hidden=32", "train.epochs=2",
                        "train.batch_size=64", "train.log_every=1", "eval.monitor_samples=128", "eval.knn_train_samples=256"],
                       capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "at step" in r.stdout and "300 images" in r.stdout, r.stdout
    rec = check_run_contract(out, method="byol")
    assert [e["epoch"] for e in rec.epochs] == [0, 1, 2]
    assert rec.config["model"]["pred_hidden"] == 32 and rec.config["optim"]["name"] == "sgd"   # the preset's, resolved
    # the recorded information values are those of the final weights on the monitor's images and views
    again = recompute_information(out)
    for space in ("backbone", "embedding"):
        for key in INFO_KEYS:
            assert abs(again[space][key] - rec.epochs[-1]["info"][space][key]) < 1e-4, (space, key, again[space], rec.epochs[-1]["info"][space])
