"""Protocols that read a run as it was trained, and options that do not change meaning silently (issue 30, classes 4 and 5),
through the real console scripts on runs the real `mssl-train` made: `mssl-eval finetune` on the quickstart's own run
(its backbone_kwargs), `knn`/`linear` on an ImageNet-layout run (its data root) and on a folder with an undecodable image
(skipped with a note, as training skips it); the default linear preset's data said and refused where it would mislead;
one k-NN rule for training and `mssl-eval knn`; a backbone override without the preset's backbone_kwargs; `--resume auto`
that continues the newest numbered run of a preset; `--slurm`
without SLURM; one summary from a two-process LM run; `coco-score --run` into no new folder. Every pre-existing folder's
files are compared by sha256 before and after."""
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST, find_fashion_mnist
from console import ENV, LM_TINY, QUICK, digest, imagenet_run, imagenet_tree, mssl, one_line, same_but

SAMPLE = str(SAMPLE_FASHION_MNIST)
pytestmark = pytest.mark.slow      # every case starts a console script; `quick` is conftest's session run


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return imagenet_tree(tmp_path_factory.mktemp("tree") / "imagenet")


@pytest.fixture(scope="module")
def broken_tree(tmp_path_factory) -> Path:
    return imagenet_tree(tmp_path_factory.mktemp("broken") / "imagenet", broken=True)


@pytest.fixture(scope="module")
def inet(tmp_path_factory, tree) -> Path:
    "A real run of the ImageNet preset on the tiny ImageNet-layout folder"
    return imagenet_run(tmp_path_factory.mktemp("inet") / "run", tree)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    "A feature cache of the test's own (the console scripts inherit ENV, which reads MSSL_CACHE from os.environ at import)"
    monkeypatch.setitem(ENV, "MSSL_CACHE", str(tmp_path / "cache"))


# ---- class 4: the run as trained -------------------------------------------------------------------------------------
def test_finetune_rebuilds_the_quickstart_backbone_with_its_kwargs(quick, copy_of):
    run = copy_of(quick)
    before = digest(run)
    r = mssl("mssl-eval", "finetune", run, "--quiet", f"root={SAMPLE}", "max_steps=2", "epochs=1", "train_fraction=0.05",
             "val_fraction=0.05", "batch_size=32", "device=cpu")
    assert r.returncode == 0 and "size mismatch" not in r.stderr, r.stderr[-3000:]
    assert r.stdout.startswith("finetune top1") and f"data: 500 training and 100 test images from embedded sample ({SAMPLE})" in r.stdout, r.stdout
    same_but(before, digest(run), "eval/finetune.json")
    assert json.loads((run / "eval" / "finetune.json").read_text())["backbone"] == "resnet10t_mini_nopool"


def test_knn_and_linear_read_an_imagenet_layout_runs_own_root(inet, tree, copy_of):
    run, data = copy_of(inet), digest(tree)
    before = digest(run)
    r = mssl("mssl-eval", "knn", run, "ks=[5]", "device=cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "was trained on imagefolder data: evaluating on its own data" in r.stderr and "data root is unknown" not in r.stderr
    assert f"data: 32 training and 12 val images from {tree / 'train'}" in r.stdout, r.stdout
    r = mssl("mssl-eval", "linear", run, "epochs=2", "device=cpu", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "head: batch 4096, LARS, peak lr 0.48, 2 epochs, augmented views" in r.stdout, r.stdout
    same_but(before, digest(run), "eval/knn.json", "eval/linear.json")
    knn = json.loads((run / "eval" / "knn.json").read_text())
    assert (knn["n_train"], knn["n_val"], knn["data_source"], knn["skipped_files"]) == (32, 12, str(tree / "train"), [])
    before = digest(run)                       # the Fashion-MNIST preset chosen for this run: one line naming the fix
    one_line(mssl("mssl-eval", "knn", run, "--preset", "fmnist", "ks=[5]"), 2, "root=search looks for Fashion-MNIST, but the data set is imagefolder",
             f"the run's data.root ({tree})")
    assert digest(run) == before and digest(tree) == data


@pytest.mark.parametrize("argv", [["knn", "ks=[5]"], ["linear", "augment=false", "epochs=2"], ["linear", "epochs=1"]])
def test_an_undecodable_image_is_skipped_with_a_note_as_in_training(inet, broken_tree, copy_of, argv):
    run, data = copy_of(inet), digest(broken_tree)
    before = digest(run)
    for attempt in ("miss", "hit"):            # the cached features remember the file they left out
        r = mssl("mssl-eval", argv[0], run, f"root={broken_tree}", "device=cpu", *argv[1:], "--quiet")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert "skipped 2 unreadable file(s), e.g." in r.stdout and "broken.JPEG" in r.stdout, r.stdout
        out = json.loads((run / "eval" / f"{argv[0]}.json").read_text())
        assert sorted(Path(p).parent.name for p in out["skipped_files"]) == ["n00000001", "n00000002"]
        assert (out["n_train"], out["n_val"]) == (32, 12)     # the images read (33 and 13 files listed)
        if "augment=false" in argv or argv[0] == "knn": assert set(out["feature_cache"].values()) == {attempt}
    same_but(before, digest(run), f"eval/{argv[0]}.json")
    assert digest(broken_tree) == data


@pytest.mark.parametrize("argv, written", [(["finetune", "epochs=1", "max_steps=2", "batch_size=8"], "finetune.json"),
                                           (["semisup", "--percent", "10", "epochs=1", "batch_size=8"], "semisup-10pct.json")])
def test_trained_protocols_skip_an_undecodable_image_too(inet, broken_tree, copy_of, argv, written):
    run, data = copy_of(inet), digest(broken_tree)
    before = digest(run)
    r = mssl("mssl-eval", argv[0], run, f"root={broken_tree}", "device=cpu", *argv[1:], "--quiet")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    out = json.loads((run / "eval" / written).read_text())
    assert "unreadable file(s), e.g." in r.stdout and "broken.JPEG" in r.stdout and out["n_val"] == 12, (r.stdout, out["n_val"])
    same_but(before, digest(run), f"eval/{written}")
    assert digest(broken_tree) == data


# ---- class 5: options that change meaning silently ------------------------------------------------------------------
def test_the_default_linear_preset_says_what_it_runs_and_refuses_the_sample(quick, copy_of):
    run = copy_of(quick)
    before = digest(run)
    if find_fashion_mnist() is None:           # full Fashion-MNIST absent: batch 4,096 + LARS on the 10k sample would mislead
        one_line(mssl("mssl-eval", "linear", run), 2, "root=full", "needs the full Fashion-MNIST, which is not installed",
                 "apt-get install dataset-fashion-mnist", "--preset fmnist-sample")
        assert digest(run) == before
    r = mssl("mssl-eval", "linear", run, "--preset", "fmnist-sample", "epochs=2", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[1] == f"data: 10000 training and 2000 test images from embedded sample ({SAMPLE})", lines
    assert lines[2] == "head: batch 256, SGD, peak lr 0.1, 2 epochs, cached features", lines
    notes = mssl("mssl-eval", "linear", "--list-presets").stdout        # the preset's description says the same
    assert "full Fashion-MNIST" in notes and "refused where only the embedded sample is installed (use fmnist-sample there)" in notes
    same_but(before, digest(run), "eval/linear.json")


def test_one_knn_rule_for_training_and_evaluation(quick, copy_of, tmp_path):
    out = tmp_path / "new"
    one_line(mssl("mssl-train", *QUICK, "eval.knn_k=200", "eval.knn_train_samples=100", "--output", out), 2,
             "eval.knn_k=200 is larger than the k-NN memory bank (100 images)", "lower eval.knn_k")
    one_line(mssl("mssl-train", *QUICK, "data.fraction=0.01", "eval.knn_k=150", "eval.knn_train_samples=10000", "--output", out), 2,
             "eval.knn_k=150 is larger than the k-NN memory bank (100 images)", "lower eval.knn_k")
    assert not out.exists()                    # refused before the run directory is made
    run = copy_of(quick)
    before = digest(run)
    one_line(mssl("mssl-eval", "knn", run, "ks=[20,100000]"), 2, "k=100000 is larger than the k-NN memory bank (10000 images)", "lower ks")
    assert digest(run) == before


def test_a_backbone_override_drops_the_presets_backbone_kwargs_with_a_notice():
    r = mssl("mssl-train", "--preset", "quickstart", "model.backbone=resnet18", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["model"]["backbone_kwargs"] == {}
    one = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(one) == 1 and "model.backbone=resnet18 replaces the preset's resnet10t_mini_nopool" in one[0] and "dropped" in one[0], one
    r = mssl("mssl-train", "--preset", "quickstart", "model.backbone=resnet18", "model.backbone_kwargs.stem_width=16", "--dry-run")
    assert r.returncode == 0 and "dropped" not in r.stderr, r.stderr
    assert yaml.safe_load(r.stdout)["model"]["backbone_kwargs"] == {"channels": [16, 32, 64, 128], "stem_width": 16}
    r = mssl("mssl-train", "--preset", "quickstart", "model.backbone=resnet10t_mini_nopool", "--dry-run")   # the same backbone: kept
    assert r.returncode == 0 and not r.stderr.strip() and yaml.safe_load(r.stdout)["model"]["backbone_kwargs"]["stem_width"] == 8


def test_resume_auto_continues_the_newest_numbered_run(quick, tmp_path):
    first = shutil.copytree(quick, tmp_path / "runs" / "quickstart")     # the preset's default output holds a finished run
    before = digest(first)
    r = mssl("mssl-train", *QUICK, "train.max_steps=2", cwd=tmp_path)    # a second run: numbered, stopped at step 2
    assert r.returncode == 0 and "this one goes to runs/quickstart-2" in r.stderr, r.stderr[-3000:]
    second = tmp_path / "runs" / "quickstart-2"
    r = mssl("mssl-train", *QUICK, "--resume", "auto", cwd=tmp_path)     # continues quickstart-2, the newest, and says so
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--resume auto continues the newest run of runs/quickstart, runs/quickstart-2" in r.stderr, r.stderr
    assert json.loads((second / "summary.json").read_text())["steps"] > 2 and digest(first) == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["quickstart", "quickstart-2"]
    r = mssl("mssl-train", *QUICK, "--resume", "auto", "--output", "runs/quickstart", cwd=tmp_path)   # named: that one
    assert r.returncode == 0 and "run already finished" in r.stdout and digest(first) == before, (r.stdout, r.stderr)


def test_slurm_without_slurm_is_refused_not_run_locally(tmp_path, monkeypatch):
    monkeypatch.setitem(ENV, "PATH", str(Path(os.__file__).parent))       # no sbatch anywhere on PATH
    out = tmp_path / "slurm-run"
    r = mssl("mssl-train", *QUICK, "--slurm", "nodes=1,time=10", "--output", out)
    one_line(r, 2, "--slurm: no SLURM on this host (sbatch is not on PATH)", "cluster=local")
    assert "submitted job" not in r.stdout and not out.exists()


def test_a_two_process_lm_run_prints_one_summary(tmp_path):
    out = tmp_path / "lm2"
    r = mssl("mssl-train", *LM_TINY, "--nproc_per_node", "2", "--output", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done: ") == 1 and r.stdout.count("run directory: ") == 1, r.stdout
    assert "exact-match accuracy" in r.stdout and "None steps" not in r.stdout


def test_coco_score_run_must_be_a_run_directory(quick, tmp_path):
    missing = tmp_path / "missing"
    one_line(mssl("mssl-eval", "coco-score", "--gt", tmp_path / "gt.json", "--detections", tmp_path / "d.json", "--run", missing), 2,
             f"--run {missing}: not a run directory", "drop --run")
    assert not missing.exists()
