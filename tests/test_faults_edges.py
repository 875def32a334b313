"""Tracebacks and unclear errors at the edges (issue 30, class 7), through the real console scripts on artefacts the real
`mssl-train` made: each case is one stderr line naming the fix, exit 2, and every pre-existing folder byte-identical
(sha256 of each file) — or, where a user expects it to work, it works: `mssl-eval select runs/*` skips an LM run with a
note, `mssl-train --config RUN/config.yaml` reads the run's own header, an override may follow a flag, an LM preset
numbers its second run's folder as image presets do."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from console import LM_TINY, QUICK, digest, imagenet_tree, mssl, one_line, same_but

pytestmark = pytest.mark.slow      # every case starts a console script; the runs are conftest's session fixtures


def test_a_batch_torchrun_cannot_split_is_one_line_before_any_process(tmp_path):
    out = tmp_path / "tr"
    one_line(mssl("mssl-train", *QUICK, "train.batch_size=63", "--nproc_per_node", "2", "--output", out), 2,
             "train.batch_size=63 must be divisible by the number of processes (2)", "--nproc_per_node")
    one_line(mssl("mssl-train", *LM_TINY, "train.batch_size=7", "--nproc_per_node", "2", "--output", out), 2,
             "train.batch_size=7 must be a multiple of train.micro_batch_size=3 × 2 processes")
    assert not out.exists()


def test_an_unknown_backbone_kwargs_key_names_it(tmp_path):
    out = tmp_path / "bk"
    one_line(mssl("mssl-train", *QUICK, "model.backbone_kwargs.chanels=[8,8,8,8]", "--output", out), 2,
             "backbone 'resnet10t_mini_nopool' does not take the option 'chanels' (model.backbone_kwargs): remove it")
    assert not out.exists()


@pytest.mark.parametrize("log, damage", [("spectra", lambda r: {k: v for k, v in r.items() if k != "eigenvalues"}),   # KeyError
                                         ("spectra", lambda r: {**r, "eigenvalues": "abc"}),                           # ValueError
                                         ("epochs", lambda r: {**r, "monitor": "x"})])                                # AttributeError
def test_spectrum_on_hand_damaged_logs_names_the_run(quick, copy_of, tmp_path, log, damage):
    run = copy_of(quick)
    path = run / f"{log}.jsonl"
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    path.write_text("".join(json.dumps(damage(r)) + "\n" for r in rows))
    before, report = digest(run), tmp_path / "report.html"
    one_line(mssl("mssl-spectrum", run, "-o", report), 2, f"{run}: damaged (", "fix or remove the damaged lines")
    assert digest(run) == before and not report.exists()


@pytest.mark.parametrize("how", ["--cache-dir", "MSSL_CACHE"])
def test_a_cache_path_that_is_a_file_is_refused_before_any_feature(quick, copy_of, tmp_path, monkeypatch, how):
    import console
    run, blocker = copy_of(quick), tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = digest(run)
    if how == "MSSL_CACHE": monkeypatch.setitem(console.ENV, "MSSL_CACHE", str(blocker))
    extra = ["--cache-dir", blocker / "features"] if how == "--cache-dir" else []
    one_line(mssl("mssl-eval", "knn", run, *extra), 2, f"{blocker} is a file, not a folder", "--no-cache",
             "--cache-dir" if how == "--cache-dir" else "MSSL_CACHE=")
    assert digest(run) == before and blocker.read_text() == "not a folder"


def test_an_lm_rate_beyond_float32_is_refused_when_the_config_is_built(tmp_path):
    out = tmp_path / "lr"
    one_line(mssl("mssl-train", *LM_TINY, "optim.base_lr=1e39", "--output", out), 2, "optim.base_lr", "float32 holds (at most 3.4e38)")
    assert not out.exists()


def test_gsm8k_dry_run_reads_its_own_run_and_checkpoint(lm, quick):
    before, image = digest(lm), digest(quick)
    r = mssl("mssl-eval", "gsm8k", lm, "--dry-run")
    assert r.returncode == 0 and "unknown config key" not in r.stderr, r.stderr
    r2 = mssl("mssl-eval", "gsm8k", lm / "checkpoints" / "step_00000004.pt", "--dry-run")    # a checkpoint of the run: its protocol too
    own, of_ckpt = ({k: v for k, v in yaml.safe_load(x.stdout).items() if k != "model"} for x in (r, r2))
    assert r2.returncode == 0 and own == of_ckpt and own["protocol"] == "gsm8k" and own["max_new_tokens"] == 8, (own, of_ckpt)
    one_line(mssl("mssl-eval", "gsm8k", quick, "--dry-run"), 2, "an image run", f"mssl-eval knn {quick}")
    assert digest(lm) == before and digest(quick) == image


def test_train_reads_a_runs_own_config_yaml(quick, lm, copy_of):
    quick = copy_of(quick)                     # a new run of it goes next to it: next to a copy, whose output is its own folder
    run_yaml = quick / "config.yaml"
    run_yaml.write_text(yaml.safe_dump({**yaml.safe_load(run_yaml.read_text()), "output": str(quick)}, sort_keys=False))
    before = digest(quick)
    r = mssl("mssl-train", "--config", quick / "config.yaml", "--dry-run")
    assert r.returncode == 0, r.stderr
    d = yaml.safe_load(r.stdout)
    assert d["model"]["backbone_kwargs"]["stem_width"] == 8 and "run_id" not in d
    r = mssl("mssl-train", "--config", lm / "config.yaml", "--dry-run")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["model"]["d_model"] == 32, r.stderr
    r = mssl("mssl-train", "--config", quick / "config.yaml", "train.max_steps=1")   # a new run of it goes next to it
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{quick} holds an earlier run; this one goes to {quick}-2" in r.stderr
    assert (Path(f"{quick}-2") / "summary.json").is_file() and digest(quick) == before


def test_an_override_may_follow_a_flag():
    r = mssl("mssl-train", "--preset", "quickstart", "--dry-run", "train.epochs=3", "--quiet", "data.fraction=0.1")
    assert r.returncode == 0, r.stderr
    d = yaml.safe_load(r.stdout)
    assert (d["train"]["epochs"], d["data"]["fraction"], d["train"]["quiet"]) == (3, 0.1, True)


def test_a_non_utf8_jsonl_file_is_named(lm, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"question": "café?", "answer": "#### 1"}\n'.encode("latin-1"))
    before = digest(lm)
    one_line(mssl("mssl-eval", "gsm8k", lm, bad), 2, f"{bad}: not UTF-8 text", "save it as UTF-8")
    assert digest(lm) == before


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", bytes(range(256)) * 8])
def test_a_garbage_checkpoint_is_not_called_unsafe(tmp_path, content):
    ckpt = tmp_path / "checkpoints" / "step_00000001.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(content)
    line = one_line(mssl("mssl-eval", "knn", ckpt), 2, f"{ckpt}", "not a checkpoint at all", "pass a checkpoint written by mssl-train")
    assert "other than tensors" not in line and ckpt.read_bytes() == content


def test_an_empty_dashboard_root_says_no_runs_found(tmp_path):
    from mssl_workbench.reports.dashboard import Dashboard
    (tmp_path / "runs").mkdir()
    status = Dashboard(tmp_path / "runs").status.value
    assert "no runs found under" in status and "mssl-train --preset quickstart" in status, status


def test_data_summary_of_an_imagenet_layout_folder(tmp_path):
    root = imagenet_tree(tmp_path / "imagenet")
    before = digest(root)
    r = mssl("mssl-train", "--preset", "imagenet-matrixssl-r50-100ep", f"data.root={root}", "--data-summary", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"train: 32 images in 4 classes, from {root / 'train'} (ImageNet layout)",
                                     f"val  : 12 images in 4 classes, from {root / 'val'} (ImageNet layout)"], r.stdout
    assert "Fashion" not in r.stdout + r.stderr and digest(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["imagenet"]


def test_select_skips_an_lm_run_with_a_note(quick, lm, copy_of):
    run = copy_of(quick)
    before, lm_before = digest(run), digest(lm)
    r = mssl("mssl-eval", "select", run, lm, "rankme_samples=64", "lidar_images=8", "lidar_views=2", "device=cpu", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"mssl-eval select: skipping {lm}: a language-model run (score it with mssl-eval gsm8k {lm})" in r.stderr
    same_but(before, digest(run), "eval/select.json")
    assert digest(lm) == lm_before
    one_line(mssl("mssl-eval", "select", lm), 2, "no image run among")


def test_an_lm_presets_second_run_goes_to_a_numbered_folder(lm, tmp_path):
    first = shutil.copytree(lm, tmp_path / "runs" / "lm-arith-ce")    # the preset's default output holds a real LM run
    before = digest(first)
    r = mssl("mssl-train", *LM_TINY, cwd=tmp_path)           # the preset's default output, runs/lm-arith-ce, holds a run
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runs/lm-arith-ce holds an earlier run; this one goes to runs/lm-arith-ce-2" in r.stderr
    assert (tmp_path / "runs" / "lm-arith-ce-2" / "summary.json").is_file() and digest(first) == before
