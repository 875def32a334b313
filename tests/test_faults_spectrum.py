"""`mssl-spectrum -o` never replaces a file it did not write (issue 22, part 3), through the real console script: another
run's checkpoint, a path under a regular file, a folder and (as a non-root user) an unwritable folder are refused with
exit 2 and one line naming the file and `--overwrite`, before any run is read; its own report is replaced atomically."""
import os

import pytest
import torch

from mssl_workbench.engine.rundir import RunWriter
from mssl_workbench.reports.spectrum import is_spectrum_report, make_synthetic_run
from console import mssl, one_line, digest


def spectrum(*argv, cwd=None):
    return mssl("mssl-spectrum", *argv, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    "A synthetic run to report on, and another run holding a checkpoint"
    root = tmp_path_factory.mktemp("spectrum")
    make_synthetic_run(root / "demo", epochs=2, dim=16, seed=0)
    w = RunWriter(root / "other").start({"model": {"method": "byol"}}, method="byol")
    w.save_checkpoint(3, {"model": {"w": torch.zeros(4)}, "config": {"model": {"method": "byol"}}})
    return {"demo": root / "demo", "other": root / "other"}


def test_another_runs_checkpoint_is_not_replaced(runs):
    before = digest(runs["other"])
    (ckpt,) = (runs["other"] / "checkpoints").glob("step_*.pt")
    one_line(spectrum(runs["demo"], "-o", ckpt), 2, f"-o {ckpt}", "did not write it", "--overwrite")
    assert digest(runs["other"]) == before


def test_bad_output_paths_are_refused_before_any_run_is_read(runs, tmp_path):
    (tmp_path / "afile").write_text("x")
    for target, words in [(tmp_path / "afile" / "report.html", "is a file, not a folder"), (tmp_path, "is a folder")]:
        r = spectrum(tmp_path / "no-such-run", "-o", target)        # the output is checked first: no run is read
        one_line(r, 2, f"-o {target}", words)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_folder_is_refused(runs, tmp_path):
    locked = tmp_path / "locked"; locked.mkdir(); locked.chmod(0o500)
    try: one_line(spectrum(runs["demo"], "-o", locked / "r.html"), 2, "permission denied")
    finally: locked.chmod(0o700)


def test_default_output_over_a_users_file_is_refused(runs, tmp_path):
    mine = tmp_path / "spectrum-report.html"; mine.write_text("<p>my notes</p>")
    one_line(spectrum(runs["demo"], cwd=tmp_path), 2, "spectrum-report.html", "did not write it", "--overwrite")
    assert mine.read_text() == "<p>my notes</p>"
    r = spectrum(runs["demo"], "--overwrite", cwd=tmp_path)
    assert r.returncode == 0 and is_spectrum_report(mine), r.stderr[-3000:]


def test_its_own_report_is_replaced_atomically(runs, tmp_path):
    out = tmp_path / "report.html"
    for _ in range(2):
        r = spectrum(runs["demo"], "-o", out)
        assert r.returncode == 0 and "wrote" in r.stdout and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert is_spectrum_report(out) and not list(tmp_path.glob(".*.tmp"))
