"""Signals, preemption and processes through the real `mssl-train` command (issue 11): a run that receives
SIGUSR1 mid-epoch checkpoints once and exits, `--resume auto` continues to bit-identical weights; killing a
2-process launcher (TERM or KILL) leaves no process behind and a readable checkpoint; the SLURM path through
submitit's local executor trains, and on its preemption signal checkpoints, requeues itself and finishes.
A run killed with `kill -9` just after an epoch-end checkpoint, resumed, then killed again just after a mid-epoch
checkpoint and resumed, ends with every tensor of its checkpoint equal to an uninterrupted run's (issue 22, part 1).
A language-model run (preset lm-arith-mce) stops on SIGUSR1 the same way, and `--resume auto` ends with every weight and
optimiser moment equal to an uninterrupted run's (issue 21, item 1). The semi-supervised protocol, a task of the same engine,
stops on SIGUSR1 with one checkpoint, exit 138, and `mssl-eval semisup ... --resume auto` finishes it (issue 27, item 2)."""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import torch

from procs import free_port
from mssl_workbench.cli.train import descendants, proc_table
from mssl_workbench.engine.rundir import checkpoint_paths, load_checkpoint, read_manifest, read_run
from test_faults import QTINY, mssl_train, start

DET = ["--preset", "quickstart", *QTINY, "train.epochs=2", "train.deterministic=true", "eval.probe=true"]   # 4 steps an epoch
# 9 steps an epoch; checkpoints at 9 (epoch end), 13 (mid-epoch) and 18; the online probe on: its set-up draws random numbers
KILL9 = ["--preset", "quickstart", *QTINY, "train.batch_size=32", "train.epochs=2", "train.checkpoint_every_steps=13",
         "train.deterministic=true", "eval.probe=true"]


def wait_for_step(run_dir: Path, step: int, proc, timeout: float = 300):
    "Block until the run has logged `step` (or the process ended)"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        path = run_dir / "metrics.jsonl"
        if path.exists() and len([l for l in path.read_text().splitlines() if l.strip()]) >= step: return
        assert proc.poll() is None, f"ended before step {step}: {proc.communicate()[1][-3000:]}"
        time.sleep(0.05)
    raise TimeoutError(f"no step {step} in {run_dir} after {timeout} s")


def cmdline(pid: int) -> bytes:
    try: return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError: return b""




def stop_line(stderr: str, name: str) -> tuple[int, str]:
    m = re.search(rf"mssl-train: stopped by {name} at step (\d+); checkpoint (\S+); continue with --resume auto", stderr)
    assert m, stderr[-3000:]
    return int(m.group(1)), m.group(2)


def test_sigusr1_mid_epoch_then_resume_is_bit_identical(tmp_path):
    part, full = tmp_path / "part", tmp_path / "full"
    p = start(*DET, "--output", part)
    q = start(*DET, "--output", full)                       # the uninterrupted run, alongside
    wait_for_step(part, 1, p)
    p.send_signal(signal.SIGUSR1)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGUSR1, (p.returncode, err[-3000:])
    assert len([l for l in err.splitlines() if l.strip()]) == 1, err
    step, ckpt = stop_line(err, "SIGUSR1")
    assert step % 4 != 0, f"the signal landed on an epoch boundary (step {step}); the test wants mid-epoch"
    assert [e["step"] for e in read_manifest(part)] == [step], "one checkpoint, of the step all agreed on"
    state = load_checkpoint(ckpt)
    assert (state["step"], state["step_in_epoch"]) == (step, step % 4)
    r = mssl_train(*DET, "--resume", "auto", "--output", part)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ckpt} (epoch 0, step {step})" in r.stdout
    q.communicate(timeout=600)
    assert q.returncode == 0
    a = load_checkpoint(checkpoint_paths(full)[0]); b = load_checkpoint(checkpoint_paths(part)[0])
    assert a["step"] == b["step"] == 8
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, f"resumed weights differ in {different[:5]}"
    assert read_run(part).summary["steps"] == 8


# a 1-block width-32 GPT-2 with the embedding MCE, a metrics record every step; enough steps that the signal, sent after
# step 1, lands mid-run
LM_STEPS = 120
LM = ["--preset", "lm-arith-mce", "--quiet", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.max_len=80",
      "data.n_train=64", "data.n_test=4", f"train.max_steps={LM_STEPS}", "train.batch_size=8", "train.log_every=1",
      "eval.max_new_tokens=4", "eval.monitor_batch=4"]


def test_lm_sigusr1_then_resume_is_bit_identical(tmp_path):
    part, full = tmp_path / "part", tmp_path / "full"
    p = start(*LM, "--output", part)
    q = start(*LM, "--output", full)                        # the uninterrupted run, alongside
    wait_for_step(part, 1, p)
    p.send_signal(signal.SIGUSR1)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGUSR1, (p.returncode, err[-3000:])
    assert len([l for l in err.splitlines() if l.strip()]) == 1 and "Traceback" not in err, err
    step, ckpt = stop_line(err, "SIGUSR1")
    assert step < LM_STEPS, f"the signal came after the last step ({step}); the test wants it mid-run"
    assert [e["step"] for e in read_manifest(part)] == [step], "one checkpoint, of the step the run stopped after"
    assert load_checkpoint(ckpt)["step"] == step
    rec = read_run(part)
    assert rec.summary["stop_reason"] == f"stopped by SIGUSR1 at step {step}" and rec.summary["accuracy"] is None
    assert not (part / "eval" / "gsm8k.json").exists(), "a stopped run does not evaluate"
    r = mssl_train(*LM, "--resume", "auto", "--output", part)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(rf"resumed from {re.escape(ckpt)} \(epoch \d+, step {step}\)", r.stdout), r.stdout   # the engine's line
    _, err = q.communicate(timeout=600)
    assert q.returncode == 0, err[-3000:]
    a, b = (load_checkpoint(checkpoint_paths(d)[0]) for d in (full, part))
    assert a["step"] == b["step"] == LM_STEPS
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, f"resumed weights differ in {different[:5]}"
    moments = [(k, n) for k, v in a["optimizer"]["state"].items() for n in ("exp_avg", "exp_avg_sq")
               if not torch.equal(v[n], b["optimizer"]["state"][k][n])]
    assert not moments, f"resumed optimiser moments differ in {moments[:5]}"
    rec = read_run(part)
    assert [m["step"] for m in rec.metrics] == list(range(1, LM_STEPS + 1)) and rec.summary["steps"] == LM_STEPS
    assert rec.summary["stop_reason"] == "completed" and rec.evals["gsm8k"]["step"] == LM_STEPS


def kill_9_after_checkpoint(run_dir: Path, step: int, proc, timeout: float = 300) -> str:
    "`kill -9` the run as soon as its checkpoint of `step` is recorded; its stdout"
    t0 = time.monotonic()
    while not any(e["step"] == step for e in read_manifest(run_dir)):
        assert proc.poll() is None, f"ended before checkpointing step {step}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() - t0 < timeout, f"no checkpoint of step {step} in {run_dir} after {timeout} s"
        time.sleep(0.005)
    proc.kill()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint_paths(run_dir)[0].name == f"step_{step:08d}.pt", "killed too late: a newer checkpoint was written"
    return out


def tensors(state, prefix: str = "") -> dict:
    "{path: tensor} of every tensor in a checkpoint (weights, optimiser, probe, RNG states)"
    if isinstance(state, torch.Tensor): return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def test_kill_9_at_an_epoch_end_then_mid_epoch_then_resume_is_bit_identical(tmp_path):
    part, full = tmp_path / "part", tmp_path / "full"
    q = start(*KILL9, "--output", full)                     # the uninterrupted run, alongside
    kill_9_after_checkpoint(part, 9, start(*KILL9, "--output", part))           # epoch end
    p = start(*KILL9, "--resume", "auto", "--output", part)
    out = kill_9_after_checkpoint(part, 13, p)                                  # mid-epoch, in the resumed process
    assert f"resumed from {part / 'checkpoints' / 'step_00000009.pt'} (epoch 1, step 9)" in out, out
    r = mssl_train(*KILL9, "--resume", "auto", "--output", part)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {part / 'checkpoints' / 'step_00000013.pt'} (epoch 1, step 13)" in r.stdout, r.stdout
    _, err = q.communicate(timeout=600)
    assert q.returncode == 0, err[-3000:]
    a, b = (load_checkpoint(checkpoint_paths(d)[0]) for d in (full, part))
    assert a["step"] == b["step"] == 18 and a["epoch"] == b["epoch"] == 2
    ta, tb = (tensors({k: s[k] for k in ("model", "optimizer", "extra", "rng", "task")}) for s in (a, b))
    assert ta.keys() == tb.keys() and any(k.startswith("/task/probe") for k in ta), sorted(ta)[:5]
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} of {len(ta)} tensors differ after kill -9 and resume: {different[:5]}"
    rec = read_run(part)
    assert [m["step"] for m in rec.metrics] == list(range(1, 19)) and rec.summary["steps"] == 18


def launch_two(tmp_path):
    "A 2-process launcher at step 1: (launcher, [torchrun and every process below it], run dir)"
    out = tmp_path / "ddp"
    p = start("--preset", "quickstart", *QTINY, "train.epochs=3", "--nproc_per_node", "2", "--master_port", free_port(), "--output", out)
    wait_for_step(out, 1, p)
    below = descendants(p.pid)
    table = proc_table()
    torchrun = [pid for pid in below if table[pid][0] == p.pid]
    workers = [pid for pid in below if torchrun and table[pid][0] == torchrun[0]]
    assert len(torchrun) == 1 and len(workers) == 2, (torchrun, workers)
    return p, below, out


def alive(pids) -> list[int]:
    "Those of `pids` still running (a zombie waiting for its parent does not run)"
    table = proc_table()
    return [pid for pid in pids if pid in table and table[pid][1] != "Z"]


def wait_all_gone(pids, timeout: float = 120) -> list[int]:
    t0 = time.monotonic()
    while alive(pids) and time.monotonic() - t0 < timeout: time.sleep(0.2)
    return alive(pids)


def test_kill_term_of_a_two_process_launcher_leaves_nothing_running(tmp_path):
    p, below, out = launch_two(tmp_path)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 143, (p.returncode, err[-3000:])
    assert alive(below) == [], "processes left after the launcher exited"
    step, ckpt = stop_line(err, "SIGTERM")
    assert "Traceback" not in err
    state = load_checkpoint(ckpt)
    assert state["step"] == step and state["world_size"] == 2
    assert [e["step"] for e in read_manifest(out)] == [step]
    assert read_run(out).metrics[-1]["step"] == step


def test_kill_9_of_a_two_process_launcher_leaves_nothing_running(tmp_path):
    p, below, out = launch_two(tmp_path)
    p.kill()
    p.communicate(timeout=60)
    assert wait_all_gone(below) == [], "torchrun or its workers outlived a SIGKILLed launcher"
    paths = checkpoint_paths(out)
    assert paths, "the workers were told (parent-death signal) and checkpointed"
    assert load_checkpoint(paths[0])["step"] == read_run(out).metrics[-1]["step"]


def test_submitit_local_executor_trains_and_requeues_on_preemption(tmp_path):
    out = tmp_path / "slurm-run"
    p = start("--preset", "quickstart", *QTINY, "train.epochs=2", "--output", out, "--slurm", "cluster=local,time=30")
    wait_for_step(out, 1, p)
    tasks = [pid for pid in descendants(p.pid) if b"submitit.core._submit" in cmdline(pid)]
    assert len(tasks) == 1, tasks
    os.kill(tasks[0], signal.SIGUSR2)                     # submitit's preemption / time-limit signal
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, (stdout, stderr[-3000:])
    assert "submitted job" in stdout and "finished: 8 steps" in stdout, stdout
    logs = "".join(f.read_text() for f in (out / "slurm").rglob("*_log.*"))
    step, ckpt = stop_line(logs, "SIGUSR2")
    assert f"resumed from {ckpt}" in logs, "the requeued job continued from the preemption checkpoint"
    rec = read_run(out)
    assert rec.summary["steps"] == 8 and [m["step"] for m in rec.metrics] == list(range(1, 9))
    assert load_checkpoint(rec.checkpoints[0])["step"] == 8 and step < 8


def test_semisup_sigusr1_checkpoints_once_exits_138_and_resumes(tmp_path):
    "The semi-supervised protocol trains on the engine: SIGUSR1 mid-run writes one checkpoint of its work directory, exits "
    "128 + 10, and `--resume auto` continues it to the end (the history holds every epoch; the work directory is removed)"
    from mssl_workbench.cli.evaluate import random_init_run
    from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
    from console import BIN, ENV
    run_dir = tmp_path / "run"
    random_init_run(run_dir, {"data": {"root": str(SAMPLE_FASHION_MNIST)},
                              "model": {"method": "matrix_ssl", "backbone": "resnet10t_mini", "proj_dim": 64, "proj_hidden": 128, "pred_hidden": 32}})
    # 1% of the 10,000-image sample: 100 images, batch 32 -> 4 steps an epoch, 30 epochs: 120 steps of a few milliseconds
    argv = [str(BIN / "mssl-eval"), "semisup", str(run_dir), "--percent", "1", "--quiet", f"root={SAMPLE_FASHION_MNIST}",
            "epochs=30", "batch_size=32", "val_fraction=0.02", "device=cpu"]
    work = run_dir / "eval" / "semisup-1pct.partial"
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for_step(work, 1, p)
    p.send_signal(signal.SIGUSR1)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGUSR1, (p.returncode, err[-3000:])
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    m = re.search(r"mssl-eval semisup: stopped by SIGUSR1 at step (\d+); checkpoint (\S+); continue with --resume auto", lines[0])
    assert m, lines[0]
    step, ckpt = int(m.group(1)), m.group(2)
    assert step < 120 and [e["step"] for e in read_manifest(work)] == [step], "one checkpoint, of the step the run stopped at"
    state = load_checkpoint(ckpt)
    assert (state["kind"], state["step"], len(state["extra"]["EpochRecords"]["history"])) == ("semisup", step, step // 4)
    assert not (run_dir / "eval" / "semisup-1pct.json").exists()
    r = subprocess.run([*argv, "--resume", "auto"], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ckpt} (epoch {step // 4}, step {step})" in r.stdout
    result = json.loads((run_dir / "eval" / "semisup-1pct.json").read_text())
    assert [h["epoch"] for h in result["history"]] == list(range(1, 31)) and 0 <= result["top1_last"] <= 1
    assert not work.exists(), "a finished evaluation removes its work directory"
