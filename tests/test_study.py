"""The project's study (benchmarks/study.py: mssl-study's machinery, mssl_workbench.study, with the project's study file and
families): its rate grid and seeds rules on results/study-like folders, and a 2-cell toy study through the real console
scripts: cells are skipped when done, a killed runner loses only the cell in progress (and leaves no training behind), a
changed recipe redoes the cell."""
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
from procs import our_processes                                                           # noqa: E402
from mssl_workbench.study.cells import extend_sweep, preset_lr, recipe_key, write_cell   # noqa: E402
from mssl_workbench.study.run import comparable, differences, measured                  # noqa: E402


def e20(out: Path):
    "The project's e20 study on the folder `out`, with ssl_cell / sweep_lrs / chosen_lr / seeds_of as the runner had them"
    st = study.project_study("e20", out)
    st.ssl_cell = lambda row, lr, seed: st.families["ssl"].cell(st, row, lr, seed)
    st.sweep_lrs = lambda row, grow=True: st.sweep("ssl", row, grow=grow)
    st.chosen = lambda row: st.chosen_lr("ssl", row)
    st.seeds = lambda row: st.seeds_of("ssl", row)
    return st


def runner(out: Path, *extra: str, **kw):
    env = {**os.environ, "MSSL_CACHE": str(out.parent / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *TOY, "--out", str(out), "--workdir", str(out.parent / "work"), "--ignore-pause", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def cell_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("toy/ssl/*.json"))}


def test_sweep_then_seeds_at_the_chosen_lr(tmp_path):
    "Seeds 1, 2 appear only when the seed-0 sweep is complete, at the lr with the best validation linear accuracy; a failed lr never wins"
    st, row = e20(tmp_path / "study"), "simclr"
    lrs = st.sweep_lrs(row, grow=False)
    assert len(lrs) == 3 and lrs[0] == pytest.approx(preset_lr("fmnist-simclr"))
    assert not [c for c in st.cells(["ssl"], [row]) if c.seed > 0]
    accs = {lrs[0]: 0.70, lrs[1]: 0.75, lrs[2]: 0.99}
    for lr, acc in accs.items():
        cell = st.ssl_cell(row, lr, 0)
        body = {"cell": cell.name, "lr": lr, "val_linear": acc} if lr != lrs[2] else {"cell": cell.name, "lr": lr, "failed": True}
        write_cell(cell.path(st.out), body)
    assert st.chosen(row) is None               # the best is the lowest rate: the grid grows first
    assert st.sweep_lrs(row)[3] == pytest.approx(lrs[1] / 2)
    cell = st.ssl_cell(row, st.sweep_lrs(row)[3], 0)
    write_cell(cell.path(st.out), {"cell": cell.name, "lr": cell.lr, "val_linear": 0.72})
    assert st.chosen(row) == lrs[1]
    seeds = [c for c in st.cells(["ssl"], [row]) if c.seed > 0]
    assert [(c.seed, c.lr) for c in seeds] == [(1, lrs[1]), (2, lrs[1])]
    assert st.ssl_cell(row, lrs[1], 1).path(st.out).name == f"simclr-lr{lrs[1]:g}-s1.json"
    # the rows that follow a chosen rate: the long budget and the published arm at that rate
    assert {(c.family, c.lr) for c in st.cells(["long", "published"], [row])} == {("long", lrs[1]), ("published", lrs[1])}


def test_grid_grows_past_an_edge_until_the_best_rate_is_interior(tmp_path):
    "A best validation point at the top edge adds 2× that rate (at most three times); seeds wait until the best is interior"
    st, row = e20(tmp_path / "study"), "vicreg"
    base = st.sweep_lrs(row, grow=False)
    def land(lr, acc=None):
        cell = st.ssl_cell(row, lr, 0)
        write_cell(cell.path(st.out), {"cell": cell.name, "lr": lr, **({"val_linear": acc} if acc is not None else {"failed": True})})
    for lr in base: land(lr, 0.5 + lr)                            # monotone: the top rate wins
    top = max(base)
    assert st.sweep_lrs(row) == base + [2 * top]
    assert st.chosen(row) is None and not [c for c in st.cells(["ssl"], [row]) if c.seed > 0]
    land(2 * top, 0.4)                                            # worse: the best (top) is now interior
    assert st.sweep_lrs(row) == base + [2 * top]
    assert st.chosen(row) == top
    assert {c.seed for c in st.cells(["ssl"], [row]) if c.seed > 0} == {1, 2}
    # a low edge grows downwards; a diverged neighbour bounds the grid like a worse one; three extensions at most
    assert extend_sweep({0.1: {"val_linear": 0.9}, 0.2: {"val_linear": 0.8}, 0.4: {"failed": True}}) == 0.05
    assert extend_sweep({0.1: {"val_linear": 0.7}, 0.2: {"val_linear": 0.8}, 0.4: {"failed": True}}) is None
    st = e20(tmp_path / "study2")
    for lr in base: land(lr, 1.0 - lr)                            # the lowest rate wins, and keeps winning
    for _ in range(5):
        for lr in st.sweep_lrs(row):
            if not st.ssl_cell(row, lr, 0).path(st.out).is_file(): land(lr, 1.0 - lr)
    lrs = st.sweep_lrs(row)
    assert len(lrs) == 3 + st.sf.rates.max_extensions == 6 and min(lrs) == pytest.approx(min(base) / 8)
    assert st.chosen(row) == min(lrs)          # at the edge after three extensions: the study goes on with it


def test_extra_seeds_for_rows_close_to_matrix_ssl(tmp_path):
    "Matrix-SSL always gets seeds 3, 4; another row only once both have three seeds whose means are within 3 points"
    st = e20(tmp_path / "study")
    def done_row(row, accs):
        lrs = st.sweep_lrs(row, grow=False)
        for lr, v in zip(lrs, (0.9, 0.5, 0.6)):                   # 1× (the middle rate) is best: the grid is complete
            c = st.ssl_cell(row, lr, 0); write_cell(c.path(st.out), {"lr": lr, "val_linear": v, "linear_last": accs[0]})
        for s, a in enumerate(accs[1:], 1):
            c = st.ssl_cell(row, lrs[0], s); write_cell(c.path(st.out), {"lr": lrs[0], "linear_last": a})
    assert st.seeds("matrix_ssl") == (0, 1, 2, 3, 4)
    assert st.seeds("simclr") == (0, 1, 2)
    done_row("matrix_ssl", (0.80, 0.81, 0.79)); done_row("simclr", (0.82, 0.83, 0.81)); done_row("vicreg", (0.70, 0.71, 0.69))
    assert st.seeds("simclr") == (0, 1, 2, 3, 4)
    assert st.seeds("vicreg") == (0, 1, 2)


def test_verify_compares_every_measured_value_but_timings():
    old = {"linear": 0.8, "trajectory": [{"epoch": 5, "train_s": 1.0, "knn": 0.7}], "wall_s": 10, "source": "a", "command": "x"}
    same = {"linear": 0.8, "trajectory": [{"epoch": 5, "train_s": 2.5, "knn": 0.7}], "wall_s": 99, "source": "b", "command": "y"}
    assert differences(measured(old), measured(same)) == []
    other = {**same, "trajectory": [{"epoch": 5, "train_s": 2.5, "knn": 0.71}]}
    assert differences(measured(old), measured(other)) == ["trajectory[0].knn: 0.7 -> 0.71"]


def test_recipe_key_follows_the_resolved_config_not_the_checkout(tmp_path):
    st = e20(tmp_path)
    a = st.ssl_cell("matrix_ssl", 0.5, 0)
    assert recipe_key(st, a) == recipe_key(st, st.ssl_cell("matrix_ssl", 0.5, 0))
    assert recipe_key(st, a) != recipe_key(st, st.ssl_cell("matrix_ssl", 0.5, 1))
    assert recipe_key(st, a) != recipe_key(st, st.ssl_cell("matrix_ssl_paper", 0.5, 0))
    assert str(study.SAMPLE) in " ".join(a.overrides)        # the data path is in the command, not in the key
    assert "SAMPLE" not in recipe_key(st, a)


@pytest.mark.slow
def test_toy_study_resume_kill_and_changed_recipe(tmp_path, monkeypatch):
    out = tmp_path / "study"
    # a killed runner: the first cell's JSON is kept, the cell in progress is lost, no training process outlives it
    p = runner(out)
    first = out / "toy" / "ssl" / f"matrix_ssl-lr{preset_lr('fmnist-matrixssl'):g}-s0.json"
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
    # the run wrote the whole study's plan (every family, whatever --family/--only chose): the two cells among them
    plan = json.loads((out / "plan.json").read_text())
    assert {f"toy/ssl/{n}" for n in files} <= {c["file"] for c in plan["cells"]} and {c["family"] for c in plan["cells"]} > {"ssl"}, plan

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
    assert differences(*comparable(old, new)) == []
    assert differences(*comparable(old, {**new, "knn": 0.71})) == ["knn: 0.7 -> 0.71"]


def test_committed_plan_is_the_runners():
    "results/study/plan.json (which the results chapter reads) is the plan `python benchmarks/study.py --dry-run` writes now"
    committed = json.loads((ROOT / "results" / "study" / "plan.json").read_text())
    assert study.project_study("e20").plan() == committed, "results/study/plan.json is stale: run python benchmarks/study.py --dry-run and commit it"
