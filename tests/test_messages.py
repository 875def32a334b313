"""Messages that point the right way (issue 22, part 5), through the real console scripts: a damaged checkpoint is
named as damaged (not "no checkpoints ... train first", not "continue it with --resume auto"), and what is on disk
stays as it was."""
import shutil
from pathlib import Path

import pytest
from console import mssl, one_line, digest, train_run

TINY = ["--preset", "quickstart", "--quiet", "train.epochs=1", "data.fraction=0.03", "train.batch_size=64",
        "eval.monitor_samples=64", "eval.knn_train_samples=64", "eval.info_samples=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    "A real tiny quickstart run (4 steps, one checkpoint)"
    return train_run(tmp_path_factory.mktemp("messages") / "run", *TINY)


@pytest.fixture
def truncated(trained, tmp_path) -> Path:
    "A copy of the run whose only checkpoint is cut to 1000 bytes"
    run = shutil.copytree(trained, tmp_path / "run")
    (ckpt,) = (run / "checkpoints").glob("step_*.pt")
    with open(ckpt, "r+b") as f: f.truncate(1000)
    return run


@pytest.mark.parametrize("command", ["knn", "linear", "select"])
def test_eval_names_the_truncated_checkpoint(truncated, command):
    before = digest(truncated)
    r = mssl("mssl-eval", command, truncated)
    one_line(r, 2, "no usable checkpoint", "is truncated (1000 of", "step_")
    assert "train first" not in r.stderr
    assert digest(truncated) == before


def test_resume_auto_names_the_damaged_checkpoint(truncated):
    before = digest(truncated)
    r = mssl("mssl-train", *TINY, "--output", truncated, "--resume", "auto")
    one_line(r, 2, "--resume auto: nothing to continue from", "is truncated (1000 of", "fresh --output")
    assert "continue it with --resume auto" not in r.stderr
    assert digest(truncated) == before


def test_resume_auto_on_a_run_without_checkpoint(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    before = digest(run)
    r = mssl("mssl-train", *TINY, "--output", run, "--resume", "auto")
    one_line(r, 2, "wrote no checkpoint", "fresh --output")
    assert "continue it with --resume auto" not in r.stderr
    assert digest(run) == before


def test_config_without_method_is_named(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text("".join(l for l in config.splitlines(True) if not l.startswith("method:")))
    r = mssl("mssl-spectrum", run, "-o", tmp_path / "report.html")   # model.method stands in for it
    assert r.returncode == 0 and "KeyError" not in r.stderr, r.stderr[-3000:]
    (run / "config.yaml").write_text("format: 2\nkind: image\n")
    r = mssl("mssl-spectrum", run, "-o", tmp_path / "report2.html")
    one_line(r, 2, "config.yaml", "no 'method'", "method: <name>")
    assert not (tmp_path / "report2.html").exists()


@pytest.fixture
def lm_run(tmp_path) -> Path:
    "A folder as an LM run leaves it (kind: lm) with one checkpoint; written through RunWriter, not trained"
    import torch
    from mssl_workbench.engine.rundir import RunWriter
    w = RunWriter(tmp_path / "lm").start({"method": "matrix_nt", "model": {"name": "tiny"}}, method="matrix_nt", kind="lm")
    w.save_checkpoint(2, {"model": {"w": torch.zeros(3)}, "config": {"method": "matrix_nt"}})
    w.append("epochs", {"epoch": 0, "step": 2, "accuracy": 0.0})
    return w.dir


@pytest.mark.parametrize("argv", [["knn"], ["linear"], ["select"], ["export-detectron2"]])
def test_image_evaluation_of_an_lm_run_points_to_gsm8k(lm_run, argv):
    before = digest(lm_run)
    r = mssl("mssl-eval", *argv, lm_run)
    one_line(r, 2, "a language-model run", "mssl-eval gsm8k")
    assert "pass a checkpoint written by mssl-train" not in r.stderr
    (ckpt,) = (lm_run / "checkpoints").glob("step_*.pt")
    one_line(mssl("mssl-eval", *argv, ckpt), 2, "a language-model run", "mssl-eval gsm8k")
    assert digest(lm_run) == before


def test_spectrum_of_an_lm_run_says_what_it_is(lm_run, tmp_path):
    r = mssl("mssl-spectrum", lm_run, "-o", tmp_path / "report.html")
    one_line(r, 2, "a language-model run", "no eigenspectra")
    assert "wait for the first epoch" not in r.stderr and not (tmp_path / "report.html").exists()


def test_mask_ratio_zero_is_refused_before_training(tmp_path):
    out = tmp_path / "mae"
    r = mssl("mssl-train", "--preset", "fmnist-mae", "--quiet", "model.options.mask_ratio=0", "data.fraction=0.03", "train.batch_size=64",
             "--output", out)
    one_line(r, 2, "model.options.mask_ratio=0", "hides no patch", "(0, 1)")
    assert "base_lr" not in r.stderr and not list(out.glob("checkpoints/*.pt"))


def test_finetune_takes_an_mmae_vit_run(tmp_path):
    "export-detectron2 sends ViTs to finetune; finetune fine-tunes the masked autoencoder's ViT encoder"
    run = tmp_path / "mmae"
    r = mssl("mssl-train", "--preset", "fmnist-mmae", "--quiet", "data.fraction=0.03", "train.batch_size=64", "eval.monitor_samples=64",
             "eval.knn_train_samples=64", "eval.info_samples=0", "--output", run)
    assert r.returncode == 0, r.stderr[-3000:]
    r = mssl("mssl-eval", "finetune", run, "epochs=1", "batch_size=64", "train_fraction=0.01", "val_fraction=0.05",
             "warmup_epochs=0", "drop_path=0.1")
    assert r.returncode == 0 and "finetune top1" in r.stdout, r.stderr[-3000:]
    assert (run / "eval" / "finetune.json").is_file()
