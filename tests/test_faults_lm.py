"""Faults of the language-model path through the real console scripts (issue 22, parts 3, 5 and 6): `mssl-train` with an
LM preset and `mssl-eval gsm8k`. Each test asserts the exit code, a one-line message that names the fix, no traceback,
and what is on disk afterwards (byte-identical where nothing may change).

One tiny LM run (a 1-block width-32 GPT-2, 4 steps, checkpoints at steps 2 and 4) is trained once and copied per test."""
import json
import os
import shutil
from pathlib import Path

import pytest

from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from mssl_workbench.engine.rundir import load_checkpoint, read_run
from console import mssl, one_line, digest, train_run

LM = ["--preset", "lm-arith-ce", "--quiet", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=80",
      "data.n_train=64", "data.n_test=6", "train.max_steps=4", "train.batch_size=8", "train.log_every=1",
      "train.checkpoint_every_steps=2", "eval.max_new_tokens=8", "eval.monitor_batch=6"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    "A real tiny LM run: checkpoints at steps 2 and 4, eval/gsm8k.json written"
    out = train_run(tmp_path_factory.mktemp("lm") / "run", *LM)
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    return out


@pytest.fixture
def run(lm_run, tmp_path) -> Path:
    return shutil.copytree(lm_run, tmp_path / "run")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    "An image run directory with its step-0 checkpoint (random init, as `mssl-eval` makes baselines; no training)"
    from mssl_workbench.cli.evaluate import random_init_run
    out = tmp_path_factory.mktemp("image") / "run"
    random_init_run(out, {"data": {"root": str(SAMPLE_FASHION_MNIST)}, "model": {"method": "matrix_ssl", "backbone": "resnet10t_mini",
                                                                               "proj_dim": 64, "proj_hidden": 128, "pred_hidden": 32}})
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    "GSM8K-format files: one with reference numbers, one whose answers have none"
    d = tmp_path_factory.mktemp("data")
    (d / "qa.jsonl").write_text("".join(json.dumps({"question": f"Ann has {a} apples and gets {b} more. How many?", "answer": f"#### {a + b}"}) + "\n"
                                        for a, b in [(2, 3), (4, 1), (5, 2)]))
    (d / "words.jsonl").write_text("".join(json.dumps({"question": q, "answer": "hello there"}) + "\n" for q in ("Say hi", "Greet me")))
    return {"qa": d / "qa.jsonl", "words": d / "words.jsonl"}


# ---- §6: refused when the config is built -----------------------------------------------------------------------------
def test_lr_inf_is_refused_at_config_time_and_leaves_no_folder(tmp_path):
    out = tmp_path / "lm"
    one_line(mssl("mssl-train", *LM, "optim.base_lr=.inf", "--output", out), 2, "optim.base_lr=inf is not allowed: it must be a finite number > 0")
    assert not out.exists()
    one_line(mssl("mssl-train", *LM, "optim.base_lr=.inf", "--dry-run"), 2, "optim.base_lr=inf is not allowed: it must be a finite number > 0")


def test_an_old_key_name_next_to_the_presets_new_one_names_the_fix():
    "The first release's optim.lr over a preset that sets optim.base_lr: one line saying which name to write"
    one_line(mssl("mssl-train", *LM, "optim.lr=0.01", "--dry-run"), 2,
             "config sets both optim.lr (the old name) and optim.base_lr: write optim.base_lr instead of optim.lr")


def test_non_finite_loss_exits_1_before_the_update_and_leaves_the_last_checkpoint(tmp_path):
    "A huge learning rate without clipping: the first update is finite, the second step's loss is not; no update follows it"
    out = tmp_path / "lm"
    huge = [*LM, "optim.base_lr=1.0e+30", "optim.grad_clip=null", "optim.warmup_ratio=0", "train.checkpoint_every_steps=1"]
    r = mssl("mssl-train", *huge, "train.stop_after_steps=1", "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = out / "checkpoints" / "step_00000001.pt"
    before = digest(out / "checkpoints")
    one_line(mssl("mssl-train", *huge, "--output", out, "--resume", "auto"), 1, "mssl-train: stopped: loss is ",
             "at step 1 (epoch 0)", f"last good checkpoint: {ckpt}", "lower optim.base_lr or loss.gamma")
    assert digest(out / "checkpoints") == before           # nothing saved after the bad step, the good one untouched
    assert load_checkpoint(ckpt)["step"] == 1 and read_run(out).summary["steps"] == 1


# ---- §6: resume onto other settings or another kind of run ------------------------------------------------------------
def test_resume_with_a_changed_architecture_is_refused_with_the_diff(run):
    before = digest(run)
    line = one_line(mssl("mssl-train", *LM, "model.n_layers=2", "--output", run, "--resume", "auto"), 2,
                    "cannot resume from", "step_00000004.pt", "model.n_layers: 1 -> 2", "fresh --output")
    assert "state_dict" not in line
    assert digest(run) == before


def test_lm_resume_onto_an_image_run_is_refused(image_run, tmp_path):
    target = shutil.copytree(image_run, tmp_path / "image")
    before = digest(target)
    one_line(mssl("mssl-train", *LM, "--output", target, "--resume", "auto"), 2,
             "cannot resume from", "the checkpoint of an image run", "kind: 'image' -> 'lm'", "fresh --output")
    assert digest(target) == before


def test_image_resume_onto_an_lm_run_is_refused(run):
    before = digest(run)
    one_line(mssl("mssl-train", "--preset", "quickstart", "--quiet", "--output", run, "--resume", "auto"), 2,
             "cannot resume from", "the checkpoint of a language-model run (an LM preset)", "kind: 'lm' -> 'image'", "fresh --output")
    assert digest(run) == before


# ---- §5: damaged checkpoints of an LM run -----------------------------------------------------------------------------
def test_truncated_newest_checkpoint_resumes_from_the_previous_intact_one(run):
    newest = run / "checkpoints" / "step_00000004.pt"
    with open(newest, "r+b") as f: f.truncate(1000)
    r = mssl("mssl-train", *LM, "--output", run, "--resume", "auto")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "resumed from" in r.stdout and "step_00000002.pt (epoch 0, step 2)" in r.stdout, r.stdout
    assert load_checkpoint(newest)["step"] == 4                      # steps 3-4 trained again and saved whole
    rec = read_run(run)
    assert rec.summary["steps"] == 4 and [m["step"] for m in rec.metrics] == [1, 2, 3, 4]


def test_every_checkpoint_damaged_is_named_by_resume_and_gsm8k(run, data):
    for p in (run / "checkpoints").glob("step_*.pt"):
        with open(p, "r+b") as f: f.truncate(1000)
    before = digest(run)
    r = mssl("mssl-train", *LM, "--output", run, "--resume", "auto")
    one_line(r, 2, "--resume auto: nothing to continue from", "is truncated (1000 of", "fresh --output")
    r = mssl("mssl-eval", "gsm8k", run, data["qa"])
    one_line(r, 2, "no usable checkpoint", "step_00000004.pt is truncated (1000 of", "pass an intact checkpoint")
    r = mssl("mssl-eval", "gsm8k", run / "checkpoints" / "step_00000002.pt", data["qa"])
    one_line(r, 2, "step_00000002.pt: truncated or damaged", "use an older checkpoint")
    assert digest(run) == before


def test_gsm8k_on_an_image_run_points_to_the_image_evaluations(image_run, data):
    before = digest(image_run)
    one_line(mssl("mssl-eval", "gsm8k", image_run, data["qa"]), 2, "an image run", "mssl-eval knn")
    assert digest(image_run) == before


# ---- §3: mssl-eval gsm8k --out ----------------------------------------------------------------------------------------
def test_gsm8k_out_never_replaces_a_file_it_did_not_write(run, data, tmp_path):
    before = digest(run)
    ckpt = run / "checkpoints" / "step_00000002.pt"
    one_line(mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", ckpt), 2, f"--out {ckpt}", "did not write it", "--overwrite")
    (tmp_path / "afile").write_text("x")
    one_line(mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", tmp_path / "afile" / "gen.jsonl"), 2, "is a file, not a folder")
    one_line(mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", tmp_path), 2, "is a folder")
    assert digest(run) == before and (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_gsm8k_out_in_an_unwritable_folder_is_refused_before_work(run, data, tmp_path):
    locked = tmp_path / "locked"; locked.mkdir(); locked.chmod(0o500)
    try: one_line(mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", locked / "gen.jsonl"), 2, "permission denied")
    finally: locked.chmod(0o700)


def test_gsm8k_scoring_no_example_keeps_the_earlier_result(run, data):
    result = run / "eval" / "gsm8k.json"
    assert result.is_file()
    before = digest(run)
    one_line(mssl("mssl-eval", "gsm8k", run, data["words"]), 2, "none of its 2 examples has a reference number",
             f"{result} is left as it was", "pass a file with answers")
    assert digest(run) == before


def test_gsm8k_out_replaces_its_own_generations_atomically(run, data, tmp_path):
    out = tmp_path / "gen.jsonl"
    for _ in range(2):                                   # the second run replaces the file the first one wrote
        r = mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", out)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
        rows = [json.loads(l) for l in out.read_text().splitlines()]
        assert [row["i"] for row in rows] == [0, 1, 2] and json.loads(r.stdout.splitlines()[-1])["n"] == 3
    assert json.loads((run / "eval" / "gsm8k.json").read_text())["generations"] == str(out)
    assert not list(tmp_path.glob(".*.tmp"))
    notes = tmp_path / "notes.jsonl"; notes.write_text('{"mine": 1}\n')
    one_line(mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", notes), 2, "did not write it")
    assert notes.read_text() == '{"mine": 1}\n'
    r = mssl("mssl-eval", "gsm8k", run, data["qa"], "--out", notes, "--overwrite")
    assert r.returncode == 0 and json.loads(notes.read_text().splitlines()[0])["i"] == 0, r.stderr[-3000:]
