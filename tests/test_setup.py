"Checks of the installed package: the console script, the README's freshness, the shipped data."
import subprocess
import sys

import mssl_workbench
from conftest import ROOT


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def test_mssl_train_help_and_version(console):
    r = run(console("mssl-train"), "--help")
    assert r.returncode == 0 and "usage: mssl-train" in r.stdout
    r = run(console("mssl-train"), "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mssl-train {mssl_workbench.__version__}"


def test_mssl_train_data_summary_of_the_quickstart_preset(console):
    r = run(console("mssl-train"), "--data-summary", "--preset", "quickstart")
    assert r.returncode == 0, r.stderr
    assert "10000 images of shape (28, 28)" in r.stdout and "2000 images" in r.stdout and "fashion-mnist-sample" in r.stdout


def test_mssl_train_missing_data_folder_exits_2_with_one_line(console, tmp_path):
    missing = tmp_path / "nowhere"
    r = run(console("mssl-train"), "--data-summary", env={"PATH": "/usr/bin:/bin", "MSSL_DATA": str(missing)})
    assert r.returncode == 2
    assert str(missing) in r.stderr and r.stderr.count("\n") == 1


def test_readme_is_generated_from_index():
    r = run(sys.executable, str(ROOT / "tools" / "make_readme.py"), "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    first = (ROOT / "README.md").read_text().splitlines()[:6]
    assert "make quickstart" in "\n".join(first) and "make test" in "\n".join(first)


def test_embedded_sample_is_small_and_documented():
    folder = ROOT / "data" / "fashion-mnist-sample"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 8e6, f"embedded sample is {size/1e6:.1f} MB"
    assert "MIT" in (ROOT / "data" / "README.md").read_text()
