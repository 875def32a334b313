"Smoke test of benchmarks/matrix_log.py --quick: the table prints, the JSON holds every cell, the methods agree."
import importlib.util
import json
import subprocess
import sys

from conftest import ROOT


def test_matrix_log_benchmark_quick(tmp_path):
    out = tmp_path / "matrix_log.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "matrix_log.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "ratios are to dense Taylor-4" in r.stdout and "batch Taylor-4" in r.stdout
    result = json.loads(out.read_text())
    assert result["meta"]["quick"] is True and len(result["rows"]) == 3
    for row in result["rows"]:
        assert set(row["cells"]) == {"dense Taylor-4", "trace identities", "exact eigh", "batch Taylor-4", "batch exact"}
        for cell in row["cells"].values():
            assert not cell["skipped"] and cell["seconds"] > 0 and cell["ratio"] > 0
        # same quantity, different algorithms: float32 agreement
        assert row["agree"]["taylor"] < 1e-4 and row["agree"]["exact"] < 1e-4, row["agree"]


def test_matrix_log_benchmark_estimates_and_marks_skipped_cells():
    spec = importlib.util.spec_from_file_location("matrix_log", ROOT / "benchmarks" / "matrix_log.py")
    bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
    done = {("dense Taylor-4", 256, 2048): dict(seconds=2.0), ("batch Taylor-4", 256, 2048): dict(seconds=0.01)}
    assert bench.estimate("dense Taylor-4", 256, 8192, done) == 2.0 * 4 ** 3      # d^3 methods
    assert bench.estimate("batch Taylor-4", 256, 8192, done) == 0.01 * 4          # m^2 d
    assert bench.estimate("exact eigh", 256, 8192, done) is None                  # nothing to scale from: run it
    assert bench.fmt_time(dict(skipped=True, estimate_s=128.0)) == "skipped (est. 128 s)"
