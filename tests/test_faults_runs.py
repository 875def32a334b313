"""Issue 30, classes 1, 2, 3 and 6, through the real console scripts on artefacts they made, with the sha256 of every file
of every folder that existed before compared after:

1. no run mixed into another: `--resume` with one run's checkpoint into a folder that holds another run is refused (exit 2,
   one line naming the fix, nothing touched), image and LM runs, also through the torchrun launcher; a folder whose
   `checkpoints/` (or `eval/`) holds a user's files without a manifest is refused, not written over;
2. generators never write over a folder: `mssl-eval make-synthetic-coco` into a folder that holds anything is refused;
3. a finished run is not rewritten: `--resume auto` (or `--resume <its checkpoint>`) on an image run that did all its
   epochs or reached `train.max_steps`, and on a finished LM run, prints `run already finished (...)`, exits 0 and changes
   no file; a larger `train.max_steps` still trains on;
6. SIGHUP (a closed terminal) stops a single-process run as SIGTERM does: one checkpoint, one line, exit 128 + 1, and
   `--resume auto` finishes it; under `nohup` (SIGHUP ignored) the run trains on to its end.

Every case starts a console script (importing torch takes seconds), so the module is marked slow."""
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from console import BIN, ENV, digest, mssl, one_line
from mssl_workbench.engine.rundir import checkpoint_paths, load_checkpoint, read_manifest, read_run
from test_faults import FMNIST, start
from test_preemption import stop_line, wait_for_step

pytestmark = pytest.mark.slow

LM = ["--preset", "lm-arith-ce", "--quiet", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=80",
      "data.n_train=64", "data.n_test=4", "train.max_steps=4", "train.batch_size=8", "train.log_every=1",
      "train.checkpoint_every_steps=2", "eval.max_new_tokens=4", "eval.monitor_batch=4"]


def train_many(runs: dict) -> dict:
    "Train {folder: argv} side by side through mssl-train; fail with the end of stderr"
    procs = {out: start(*argv, "--output", out) for out, argv in runs.items()}
    for out, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return runs


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    "Runs made by the real command: image runs A and C (2 epochs, checkpoints at 4 and 8), M (train.max_steps=5); LM runs L and K"
    root = tmp_path_factory.mktemp("runs")
    train_many({root / "A": FMNIST, root / "C": FMNIST, root / "M": [*FMNIST, "train.max_steps=5"], root / "L": LM, root / "K": LM})
    return {name: root / name for name in "ACMLK"}


@pytest.fixture
def snapshot(made):
    "sha256 of every file of every run made, to compare after a command"
    return lambda: {name: digest(path) for name, path in made.items()}


# ---- 1. a run mixed into another --------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["file", "folder", "launcher"])
def test_resume_of_another_runs_checkpoint_into_a_run_is_refused(made, snapshot, how):
    before = snapshot()
    source = made["A"] / "checkpoints" / "step_00000004.pt" if how != "folder" else made["A"]
    launcher = ["--nproc_per_node", "2"] if how == "launcher" else []
    r = mssl("mssl-train", *FMNIST, *launcher, "--resume", source, "--output", made["C"])
    run_a, run_c = (read_run(made[x]).config["run_id"] for x in "AC")
    one_line(r, 2, f"the checkpoint is of run {run_a}", f"holds run {run_c}", "mix", f"continue {made['C']} with --resume auto",
             "fresh --output")
    assert snapshot() == before, "a refused resume changed a run's files"


def test_lm_resume_of_another_lm_runs_checkpoint_is_refused(made, snapshot):
    before = snapshot()
    r = mssl("mssl-train", *LM, "--resume", made["L"] / "checkpoints" / "step_00000002.pt", "--output", made["K"])
    one_line(r, 2, "the checkpoint is of run", f"holds run {read_run(made['K']).config['run_id']}", "--resume auto")
    assert snapshot() == before


def test_another_runs_checkpoint_into_a_fresh_folder_starts_a_new_run_and_leaves_the_source_alone(made, snapshot, tmp_path):
    before = snapshot()
    r = mssl("mssl-train", *FMNIST, "--resume", made["A"] / "checkpoints" / "step_00000004.pt", "--output", tmp_path / "F")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {made['A'] / 'checkpoints' / 'step_00000004.pt'} (epoch 1, step 4)" in r.stdout
    rec = read_run(tmp_path / "F")
    assert rec.summary["steps"] == 8 and rec.config["run_id"] != read_run(made["A"]).config["run_id"]
    assert load_checkpoint(rec.checkpoints[0])["run_id"] == rec.config["run_id"], "a checkpoint names its run"
    assert snapshot() == before, "continuing A's checkpoint elsewhere changed A"


@pytest.mark.parametrize("user_file", ["checkpoints/step_00000008.pt", "checkpoints/notes.txt", "eval/knn.json"])
@pytest.mark.parametrize("resume", [[], ["--resume", "auto"]])
def test_a_users_files_where_a_run_writes_are_refused_not_written_over(made, tmp_path, user_file, resume):
    out = tmp_path / "U"
    (out / user_file).parent.mkdir(parents=True)
    (out / user_file).write_bytes(b"the user's own bytes")
    (out / "README").write_text("my folder")
    before = digest(out)
    r = mssl("mssl-train", *FMNIST, *resume, "--output", out)
    one_line(r, 2, str(out / user_file), "was not written by a run", "move it away", "fresh --output")
    assert digest(out) == before


# ---- 2. generators that overwrite ----------------------------------------------------------------------------------
def test_make_synthetic_coco_never_writes_over_a_folder(tmp_path):
    coco = tmp_path / "coco"
    r = mssl("mssl-eval", "make-synthetic-coco", coco, "--train", "2", "--val", "2", "--size", "64")
    assert r.returncode == 0, r.stderr[-3000:]
    mine = tmp_path / "mine"                                        # a COCO set of the user's: other images, one annotation file
    (mine / "annotations").mkdir(parents=True); (mine / "val2017").mkdir()
    (mine / "annotations" / "instances_val2017.json").write_text('{"images": [], "annotations": [], "categories": []}')
    (mine / "val2017" / "val_000000.png").write_bytes(b"not the generator's image")
    for folder in (coco, mine):
        before = digest(folder)
        r = mssl("mssl-eval", "make-synthetic-coco", folder, "--val", "3", "--size", "64")
        one_line(r, 2, f"make_synthetic_coco: {folder} exists and is not empty", "choose a new or empty DEST")
        assert digest(folder) == before
        assert not list(tmp_path.glob(".*.partial")), "no hidden work folder left"
    (tmp_path / "empty").mkdir()                                    # an empty folder is filled
    r = mssl("mssl-eval", "make-synthetic-coco", tmp_path / "empty", "--train", "1", "--val", "1", "--size", "64")
    assert r.returncode == 0 and (tmp_path / "empty" / "annotations" / "instances_val2017.json").is_file(), r.stderr[-3000:]


# ---- 3. a finished run rewritten -----------------------------------------------------------------------------------
@pytest.mark.parametrize("run,argv,resume,why", [
    ("A", FMNIST, "auto", "all 2 epochs done, step 8"),
    ("A", FMNIST, "checkpoints/step_00000008.pt", "all 2 epochs done, step 8"),
    ("M", [*FMNIST, "train.max_steps=5"], "auto", "train.max_steps=5 reached at step 5"),
    ("L", LM, "auto", "step 4 of 4"),
])
def test_resuming_a_finished_run_says_so_and_changes_nothing(made, snapshot, run, argv, resume, why):
    before = snapshot()
    resume = resume if resume == "auto" else made[run] / resume
    for _ in range(2):                                               # twice: no step, no record, no summary added either time
        r = mssl("mssl-train", *argv, "--resume", resume, "--output", made[run])
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr[-3000:]
        assert r.stdout.strip() == (f"mssl-train: run already finished ({why}); nothing written to {made[run]}: evaluate it with "
                                    "mssl-eval, or raise train.epochs / train.max_steps to train further"), r.stdout
    assert snapshot() == before, "resuming a finished run changed its files"
    if run == "L": assert read_run(made[run]).summary["final_loss"] is not None


def test_a_larger_max_steps_trains_a_finished_run_on(made, tmp_path):
    M = shutil.copytree(made["M"], tmp_path / "M")
    r = mssl("mssl-train", *FMNIST, "train.max_steps=6", "--resume", "auto", "--output", M)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {M / 'checkpoints' / 'step_00000005.pt'} (epoch 1, step 5)" in r.stdout
    rec = read_run(M)
    assert rec.summary["steps"] == 6 and [m["step"] for m in rec.metrics] == list(range(1, 7))


# ---- 6. signals -------------------------------------------------------------------------------------------------------
LONG = [*FMNIST, "train.epochs=30"]                                   # 120 steps of a few milliseconds: a signal lands mid-run


def test_sighup_checkpoints_says_so_exits_129_and_resumes(tmp_path):
    out = tmp_path / "hup"
    # SIGHUP at a terminal's default: a test run started under nohup would hand its SIG_IGN down (the next test's case)
    p = start(*LONG, "--output", out, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    wait_for_step(out, 1, p)
    p.send_signal(signal.SIGHUP)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGHUP, (p.returncode, err[-3000:])
    assert len([l for l in err.splitlines() if l.strip()]) == 1 and "Traceback" not in err, err
    step, ckpt = stop_line(err, "SIGHUP")
    assert step < 120 and read_manifest(out)[-1]["step"] == step and load_checkpoint(ckpt)["step"] == step
    assert f"--output {out}" in err
    r = mssl("mssl-train", *LONG, "--resume", "auto", "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ckpt}" in r.stdout
    rec = read_run(out)
    assert rec.summary["steps"] == 120 and [m["step"] for m in rec.metrics] == list(range(1, 121))


def test_under_nohup_sighup_is_ignored_and_the_run_finishes(tmp_path):
    out = tmp_path / "nohup"
    argv = [*FMNIST, "train.epochs=10", "--output", out]
    p = subprocess.Popen([str(BIN / "mssl-train"), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ENV, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))   # what nohup does
    wait_for_step(out, 1, p)
    p.send_signal(signal.SIGHUP)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, (p.returncode, err[-3000:])
    assert read_run(out).summary["steps"] == 40 and checkpoint_paths(out)[0].name == "step_00000040.pt"
