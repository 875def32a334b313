"""The quickstart prints its linear probe beside the raw pixels' (issue 28 item 6), through the real console scripts:
the line mssl-train prints, the eval/linear.json it writes, `mssl-eval linear --raw-pixels` agreeing with both, and
`eval.final_linear=false` turning it off. Every case starts a console script, so the module is marked slow."""
import json

import pytest
from console import mssl

pytestmark = pytest.mark.slow
TINY = ["--preset", "quickstart", "--quiet", "train.epochs=1", "data.fraction=0.05", "train.batch_size=64",
        "eval.monitor_samples=256", "eval.knn_train_samples=256", "eval.info_samples=0"]


def _probe_line(stdout: str) -> list[str]: return [l for l in stdout.splitlines() if l.startswith("linear probe")]


def test_quickstart_prints_the_linear_probe_beside_raw_pixels(tmp_path):
    r = mssl("mssl-train", *TINY, "--output", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = _probe_line(r.stdout)
    rec = json.loads((tmp_path / "run" / "eval" / "linear.json").read_text())
    raw = rec["raw_pixels"]
    assert f"held-out top-1: {100 * rec['top1_last']:.1f}% (raw pixels: {100 * raw['top1_last']:.1f}%)" in line, line
    assert rec["preset"] == "fmnist-sample" and rec["n_train"] == 500 and rec["n_val"] == 2000, rec   # the run's 5 % and the test split
    assert raw["top1_last"] > 0.6, raw                  # Fashion-MNIST pixels carry the label: the head finds it (about 75 % on 500 images)
    assert r.stdout.index("k-NN accuracy") < r.stdout.index("linear probe") < r.stdout.index("run directory:")
    # mssl-eval linear --raw-pixels on the same run, splits and head gives the same numbers
    e = mssl("mssl-eval", "linear", tmp_path / "run", "--preset", "fmnist-sample", "--raw-pixels", "train_fraction=0.05")
    assert e.returncode == 0, e.stderr[-3000:]
    again = json.loads((tmp_path / "run" / "eval" / "linear.json").read_text())
    assert (again["top1_last"], again["raw_pixels"]) == (rec["top1_last"], raw), (again["top1_last"], again["raw_pixels"])
    assert f"raw pixels, the same head: top1 last {raw['top1_last']:.4f}" in e.stdout, e.stdout


def test_final_linear_off(tmp_path):
    r = mssl("mssl-train", *TINY, "data.fraction=0.02", "eval.final_linear=false", "--output", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _probe_line(r.stdout) == [] and not (tmp_path / "run" / "eval" / "linear.json").exists()
