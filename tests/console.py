"""Helpers shared by the tests that drive the real console scripts: the environment a user's shell gives them, one
call, the one-line-error check every fault test makes, and a digest of a folder (to assert nothing on disk changed)."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
ENV.pop("CI", None)


def mssl(command: str, *argv, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    "A console script of this environment, as a user runs it"
    return subprocess.run([str(BIN / command), *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)


def one_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    "Assert exit `code`, exactly one stderr line, no traceback, and each needle in that line; return the line"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles: assert n in lines[0], (n, lines[0])
    return lines[0]


def digest(folder: Path) -> dict:
    "sha256 of every file below `folder`, by relative path"
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_run(out: Path, *argv) -> Path:
    "A real `mssl-train` run into `out` (the fixtures' tiny runs); fails the test with the end of stderr"
    r = mssl("mssl-train", *argv, "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# the tiny real runs the fault tests start from: the quickstart preset as it is (its backbone_kwargs kept), an LM preset
QUICK = ["--preset", "quickstart", "--quiet", "data.fraction=0.03", "train.epochs=1", "train.batch_size=64",
         "eval.monitor_samples=128", "eval.knn_train_samples=128", "eval.probe=false", "eval.final_linear=false"]
LM_TINY = ["--preset", "lm-arith-ce", "--quiet", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=80",
           "data.n_train=64", "data.n_test=6", "train.max_steps=4", "train.batch_size=8", "train.log_every=1",
           "train.checkpoint_every_steps=2", "eval.max_new_tokens=8", "eval.monitor_batch=6"]


def imagenet_tree(dest: Path, *, broken: bool = False) -> Path:
    "A tiny ImageNet-layout folder (4 classes, 8 train / 3 val images each); `broken`: one undecodable file in train/ and in val/"
    from mssl_workbench.data.folders import make_imagefolder
    root = make_imagefolder(dest, per_class={"train": 8, "val": 3}, num_classes=4, size=40)
    if broken:
        (root / "train" / "n00000001" / "broken.JPEG").write_bytes(b"not an image at all")
        (root / "val" / "n00000002" / "broken.JPEG").write_bytes(b"\xff\xd8 not a jpeg either")
    return root


def imagenet_run(out: Path, root: Path) -> Path:
    "A real `mssl-train` run of the ImageNet preset on a tiny ImageNet-layout folder, on the CPU"
    return train_run(out, "--preset", "imagenet-matrixssl-r50-100ep", "--quiet", f"data.root={root}", "model.backbone=resnet10t_mini",
                     "data.image_size=32", "data.num_workers=0", "model.proj_dim=32", "model.proj_hidden=64", "model.pred_hidden=16",
                     "train.epochs=1", "train.batch_size=8", "eval.monitor_samples=16", "eval.knn_train_samples=32", "eval.knn_k=5")


def same_but(before: dict, after: dict, *added: str):
    "Every file of `before` unchanged in `after`, and nothing new there but `added`"
    assert {k: v for k, v in after.items() if k not in added} == before, sorted(set(after) ^ set(before))
    for a in added: assert a in after, (a, sorted(after))
