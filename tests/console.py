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
