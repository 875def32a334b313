"""The workbench's own models through its documented paths (issue 22, part 6), through the real console scripts:
`mssl-eval export-detectron2` and `coco` refuse the default backbone (`resnet10t_mini`, deep stem) at the start with the
list of backbones that work, even when it was trained in RGB; a negative M-MAE `lamda` is refused when the config is built."""
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
