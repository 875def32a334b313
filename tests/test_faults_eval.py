"""The workbench's own models through its documented paths (issue 22, part 6), through the real console scripts:
`mssl-eval export-detectron2` and `coco` refuse the default backbone (`resnet10t_mini`, deep stem) at the start with the
list of backbones that work, even when it was trained in RGB; a negative M-MAE `lamda` is refused when the config is built;
a semi-supervised run whose loss is not finite stops before the optimiser step, with the engine's message (issue 27, item 2)."""
from pathlib import Path

import pytest

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from console import mssl, one_line, digest

WORKS = "resnet18, resnet34, resnet50, resnet101, resnet152"


@pytest.fixture(scope="module")
def rgb_default(tmp_path_factory) -> Path:
    "A run of the default backbone (resnet10t_mini) on RGB input: its step-0 checkpoint"
    from mssl_workbench.cli.evaluate import random_init_run
    out = tmp_path_factory.mktemp("d2") / "run"
    random_init_run(out, {"data": {"root": str(SAMPLE_FASHION_MNIST), "in_chans": 3},
                          "model": {"method": "matrix_ssl", "backbone": "resnet10t_mini", "proj_dim": 64, "proj_hidden": 128, "pred_hidden": 32}})
    return out


@pytest.mark.parametrize("argv", [["export-detectron2"], ["coco", "--data", "no-such-coco"]])
def test_default_backbone_is_refused_at_the_start_with_the_backbones_that_work(rgb_default, argv):
    before = digest(rgb_default)
    r = mssl("mssl-eval", argv[0], rgb_default, *argv[1:])         # coco: the backbone is refused before the data is looked at
    one_line(r, 2, "'resnet10t_mini' does not have torchvision's ResNet layout", WORKS, "model.backbone=resnet50")
    assert "1-channel" not in r.stderr                              # it was trained in RGB: only the backbone is in the way
    assert digest(rgb_default) == before                            # no eval/ record, no detectron2.pkl


def test_negative_mmae_lamda_is_refused_when_the_config_is_built(tmp_path):
    out = tmp_path / "mmae"
    for extra in (["--output", out], ["--dry-run"]):
        one_line(mssl("mssl-train", "--preset", "fmnist-mmae", "--quiet", "model.options.lamda=-0.01", *extra), 2,
                 "model.options.lamda=-0.01", "finite number >= 0", "e.g. 0.01")
    assert not out.exists()


def test_non_finite_loss_of_an_evaluation_stops_before_the_step(tmp_path):
    "Semi-supervised fine-tuning of a checkpoint with a NaN weight: the engine's guard stops it at step 0, before the optimiser "
    "step, with its message; no checkpoint is written and no result recorded"
    import torch
    from mssl_workbench.cli.evaluate import random_init_run
    from mssl_workbench.engine.rundir import load_checkpoint, read_manifest
    run_dir = tmp_path / "run"
    ckpt = random_init_run(run_dir, {"data": {"root": str(SAMPLE_FASHION_MNIST)},
                                     "model": {"method": "matrix_ssl", "backbone": "resnet10t_mini", "proj_dim": 64, "proj_hidden": 128, "pred_hidden": 32}})
    state = load_checkpoint(ckpt)
    name = next(k for k in state["model"] if k.startswith("backbone.") and k.endswith(".weight") and state["model"][k].ndim == 4)
    state["model"][name].view(-1)[0] = float("nan")
    torch.save(state, ckpt)          # rewritten: the manifest's size no longer matches, so the file is named, not the run
    r = mssl("mssl-eval", "semisup", ckpt, "--percent", "1", "--quiet", f"root={SAMPLE_FASHION_MNIST}", "epochs=2", "batch_size=32",
             "val_fraction=0.02", "device=cpu")
    one_line(r, 1, "mssl-eval semisup: stopped: loss is nan at step 0 (epoch 0); last good checkpoint: none; lower lr_backbone and lr_head")
    work = run_dir / "eval" / "semisup-1pct.partial"
    assert read_manifest(work) == [] and not (run_dir / "eval" / "semisup-1pct.json").exists()
