"""The study runner (benchmarks/study.py) on a 2-cell toy study through the real console scripts: cells are skipped when
done, a killed runner loses only the cell in progress (and leaves no training behind), a changed recipe redoes the cell."""
import importlib.util, json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "study.py"


def load_study():
    spec = importlib.util.spec_from_file_location("study_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod              # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


study = load_study()
TOY = ["--budget", "toy", "--family", "ssl", "--only", "matrix_ssl", "simclr"]


def runner(out: Path, *extra: str, **kw):
    env = {**os.environ, "MSSL_CACHE": str(out.parent / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *TOY, "--out", str(out), "--workdir", str(out.parent / "work"), "--ignore-pause", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def cell_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("toy/ssl/*.json"))}


def our_processes(marker: str) -> list[int]:
    "Live processes whose command line mentions `marker` (the test's own folder)"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit(): continue
        try: cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError: continue
        if marker in cmd: pids.append(int(d.name))
    return pids


def test_sweep_then_seeds_at_the_chosen_lr(tmp_path):
    "Seeds 1, 2 appear only when the seed-0 sweep is complete, at the lr with the best validation linear accuracy; a failed lr never wins"
    out, row = tmp_path / "study", "simclr"
    lrs = study.sweep_lrs(row, "e20")
    assert len(lrs) == 3 and lrs[0] == pytest.approx(study.preset_lr("fmnist-simclr"))
    assert not [c for c in study.ssl_cells("e20", out, [row]) if c.seed > 0]
    accs = {lrs[0]: 0.70, lrs[1]: 0.75, lrs[2]: 0.99}
    for lr, acc in accs.items():
        cell = study.ssl_cell(row, "e20", lr, 0)
        body = {"cell": cell.name, "lr": lr, "val_linear": acc} if lr != lrs[2] else {"cell": cell.name, "lr": lr, "failed": True}
        study.write_cell(cell.path(out), body)
    assert study.chosen_lr(row, "e20", out) is None               # the best is the lowest rate: the grid grows first
    assert study.sweep_lrs(row, "e20", out)[3] == pytest.approx(lrs[1] / 2)
    cell = study.ssl_cell(row, "e20", study.sweep_lrs(row, "e20", out)[3], 0)
    study.write_cell(cell.path(out), {"cell": cell.name, "lr": cell.lr, "val_linear": 0.72})
    assert study.chosen_lr(row, "e20", out) == lrs[1]
    seeds = [c for c in study.ssl_cells("e20", out, [row]) if c.seed > 0]
    assert [(c.seed, c.lr) for c in seeds] == [(1, lrs[1]), (2, lrs[1])]
    assert study.ssl_cell(row, "e20", lrs[1], 1).path(out).name == f"simclr-lr{lrs[1]:g}-s1.json"


def test_grid_grows_past_an_edge_until_the_best_rate_is_interior(tmp_path):
    "A best validation point at the top edge adds 2× that rate (at most three times); seeds wait until the best is interior"
    out, row = tmp_path / "study", "vicreg"
    base = study.sweep_lrs(row, "e20")
    def land(lr, acc=None):
        cell = study.ssl_cell(row, "e20", lr, 0)
        study.write_cell(cell.path(out), {"cell": cell.name, "lr": lr, **({"val_linear": acc} if acc is not None else {"failed": True})})
    for lr in base: land(lr, 0.5 + lr)                            # monotone: the top rate wins
    top = max(base)
    assert study.sweep_lrs(row, "e20", out) == base + [2 * top]
    assert study.chosen_lr(row, "e20", out) is None and not [c for c in study.ssl_cells("e20", out, [row]) if c.seed > 0]
    land(2 * top, 0.4)                                            # worse: the best (top) is now interior
    assert study.sweep_lrs(row, "e20", out) == base + [2 * top]
    assert study.chosen_lr(row, "e20", out) == top
    assert {c.seed for c in study.ssl_cells("e20", out, [row]) if c.seed > 0} == {1, 2}
    # a low edge grows downwards; a diverged neighbour bounds the grid like a worse one; three extensions at most
    out2 = tmp_path / "study2"
    assert study.extend_sweep({0.1: {"val_linear": 0.9}, 0.2: {"val_linear": 0.8}, 0.4: {"failed": True}}) == 0.05
    assert study.extend_sweep({0.1: {"val_linear": 0.7}, 0.2: {"val_linear": 0.8}, 0.4: {"failed": True}}) is None
    out = out2
    for lr in base: land(lr, 1.0 - lr)                            # the lowest rate wins, and keeps winning
    for _ in range(5):
        lrs = study.sweep_lrs(row, "e20", out)
        for lr in lrs:
            if not study.ssl_cell(row, "e20", lr, 0).path(out).is_file(): land(lr, 1.0 - lr)
    lrs = study.sweep_lrs(row, "e20", out)
    assert len(lrs) == 3 + study.MAX_EXTENSIONS and min(lrs) == pytest.approx(min(base) / 8)
    assert study.chosen_lr(row, "e20", out) == min(lrs)          # at the edge after three extensions: the study goes on with it


def test_extra_seeds_for_rows_close_to_matrix_ssl(tmp_path):
    "Matrix-SSL always gets seeds 3, 4; another row only once both have three seeds whose means are within 3 points"
    out = tmp_path / "study"
    def done_row(row, accs):
        lrs = study.sweep_lrs(row, "e20")
        for lr, v in zip(lrs, (0.9, 0.5, 0.6)):                   # 1× (the middle rate) is best: the grid is complete
            c = study.ssl_cell(row, "e20", lr, 0); study.write_cell(c.path(out), {"lr": lr, "val_linear": v, "linear_last": accs[0]})
        for s, a in enumerate(accs[1:], 1):
            c = study.ssl_cell(row, "e20", lrs[0], s); study.write_cell(c.path(out), {"lr": lrs[0], "linear_last": a})
    assert study.seeds_of("matrix_ssl", "e20", out) == (0, 1, 2, 3, 4)
    assert study.seeds_of("simclr", "e20", out) == (0, 1, 2)
    done_row("matrix_ssl", (0.80, 0.81, 0.79)); done_row("simclr", (0.82, 0.83, 0.81)); done_row("vicreg", (0.70, 0.71, 0.69))
    assert study.seeds_of("simclr", "e20", out) == (0, 1, 2, 3, 4)
    assert study.seeds_of("vicreg", "e20", out) == (0, 1, 2)


def test_verify_compares_every_measured_value_but_timings():
    old = {"linear": 0.8, "trajectory": [{"epoch": 5, "train_s": 1.0, "knn": 0.7}], "wall_s": 10, "source": "a", "command": "x"}
    same = {"linear": 0.8, "trajectory": [{"epoch": 5, "train_s": 2.5, "knn": 0.7}], "wall_s": 99, "source": "b", "command": "y"}
    assert study.differences(study.measured(old), study.measured(same)) == []
    other = {**same, "trajectory": [{"epoch": 5, "train_s": 2.5, "knn": 0.71}]}
    assert study.differences(study.measured(old), study.measured(other)) == ["trajectory[0].knn: 0.7 -> 0.71"]


def test_recipe_key_follows_the_resolved_config_not_the_checkout():
    a = study.ssl_cell("matrix_ssl", "e20", 0.5, 0)
    assert study.recipe_key(a) == study.recipe_key(study.ssl_cell("matrix_ssl", "e20", 0.5, 0))
    assert study.recipe_key(a) != study.recipe_key(study.ssl_cell("matrix_ssl", "e20", 0.5, 1))
    assert study.recipe_key(a) != study.recipe_key(study.ssl_cell("matrix_ssl_paper", "e20", 0.5, 0))
    assert str(study.SAMPLE) in " ".join(a.overrides)        # the data path is in the command, not in the key
    assert "SAMPLE" not in study.recipe_key(a)


@pytest.mark.slow
def test_toy_study_resume_kill_and_changed_recipe(tmp_path, monkeypatch):
    out = tmp_path / "study"
    # a killed runner: the first cell's JSON is kept, the cell in progress is lost, no training process outlives it
    p = runner(out)
    first = out / "toy" / "ssl" / f"matrix_ssl-lr{study.sweep_lrs('matrix_ssl', 'toy')[0]:g}-s0.json"
    deadline = time.time() + 300
    while not first.is_file():
        assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline, "the first toy cell took over 5 minutes"
        time.sleep(0.2)
    time.sleep(3)                              # the second cell is training now
    p.send_signal(signal.SIGKILL); p.wait(timeout=30)
    assert len(cell_files(out)) == 1, "killed during the second cell: only the first cell's JSON may exist"
    time.sleep(1)
    assert not our_processes(str(tmp_path / "work")), "a child of the killed runner kept running"
    kept = cell_files(out)

    # the rerun skips the done cell (byte-identical) and redoes the killed one
    p = runner(out); log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log
    files = cell_files(out)
    assert len(files) == 2 and files[first.name] == kept[first.name], log
    assert "matrix_ssl" not in log.split("written")[0].replace(first.name, ""), log
    rows = [json.loads(b) for b in files.values()]
    for r in rows:
        assert r["recipe_key"] and r["commit"] and r["load_start"] and r["load_end"] and r["command"].startswith("mssl-train ")
        assert 0 < r["linear"] <= 1 and 0 < r["knn"] <= 1 and r["rankme"] > 0 and r["spectra"]["backbone"]["values"]
        assert not r.get("failed"), r

    # a complete study: nothing runs, nothing changes
    p = runner(out); log, _ = p.communicate(timeout=120)
    assert p.returncode == 0 and "0 cell(s) written" in log, log
    assert cell_files(out) == files

    # a changed recipe (an extra override on one method) redoes that cell only
    monkeypatch.setattr(study, "SSL_METHODS", [(r, m, e + ["model.loss.order=2"] if r == "matrix_ssl" else e) for r, m, e in study.SSL_METHODS])
    monkeypatch.setenv("MSSL_CACHE", str(tmp_path / "cache"))
    assert study.main([*TOY, "--out", str(out), "--workdir", str(tmp_path / "work"), "--ignore-pause"]) == 0
    after = cell_files(out)
    simclr = next(n for n in files if n.startswith("simclr"))
    assert after[simclr] == files[simclr]
    assert after[first.name] != files[first.name]
    assert json.loads(after[first.name])["recipe_key"] != json.loads(files[first.name])["recipe_key"]
    assert "model.loss.order=2" in json.loads(after[first.name])["overrides"]


def test_verify_compares_first_edition_cells_in_todays_vocabulary():
    "A first-edition cell kept the best test epoch as `linear`; its re-run's last epoch is `linear`, its best `linear_best`"
    import random
    best, last = random.uniform(0.5, 0.9), random.uniform(0.5, 0.9)
    old = {"linear": best, "linear_last": last, "knn": 0.7, "wall_s": 1.0}
    new = {"linear": last, "linear_last": last, "linear_best": best, "knn": 0.7, "val_linear_last": 0.6, "wall_s": 2.0}
    assert study.differences(*study.comparable(old, new)) == []
    assert study.differences(*study.comparable(old, {**new, "knn": 0.71})) == ["knn: 0.7 -> 0.71"]
