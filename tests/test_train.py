"""The training engine end to end: every method lowers its loss, resume is bit-identical, an interrupted
checkpoint write loses nothing, and 2-process DDP (gloo) equals one process with the same global batch."""
import copy
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from procs import free_port
from mssl_workbench.config.schema import config_from_dict
from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST
from mssl_workbench.engine.hooks import Checkpointer, Hook, NonFiniteError, default_hooks
from mssl_workbench.engine.contract import RunState
from mssl_workbench.objectives.matrix_ssl import mec_lamda_inv_schedule
from mssl_workbench.methods.registry import get_method, list_methods
from mssl_workbench.engine.rundir import latest_checkpoint, load_checkpoint
from mssl_workbench.engine.image import fit

TINY = {
    "data": {"root": str(SAMPLE_FASHION_MNIST), "fraction": 0.03},
    "model": {"backbone": "resnet10t_mini", "proj_dim": 64, "proj_hidden": 128},
    "optim": {"warmup_epochs": 0.5},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 1, "quiet": True},
    "eval": {"monitor_samples": 256, "knn_train_samples": 300, "batch_size": 256, "probe": False},
}


def tiny(out, **sections):
    "A seconds-long run of the method in sections['model'] (default Matrix-SSL), with its own recipe at tiny sizes"
    d = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        d.setdefault(section, {}).update(values)
    if get_method(d["model"].get("method", "matrix_ssl")).heads.get("pred_hidden"): d["model"].setdefault("pred_hidden", 32)
    d["output"] = str(out)
    return config_from_dict(d)


PAIR_METHODS = [m for m in list_methods() if get_method(m).is_pair]


def read_jsonl(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


class ObjectiveOnFixedViews(Hook):
    """The training objective on one fixed pair of views of 64 training images, before and after training.

    Per-step losses are too noisy to show learning in a few steps: every step draws new views of a new
    batch, and MoCo's queue and MEC's lambda schedule change the objective itself as training goes. Here
    the views are the same for both evaluations, and both use the loss module as it is at the end (the
    final queue of real keys). Both run on deep copies in train mode, so the run is untouched."""
    order = -100

    def before_fit(self, run):
        augment = copy.deepcopy(run.data.augment)
        augment.generator = torch.Generator().manual_seed(1234)
        self.views = augment(run.data.train.images[:64].to(run.info.device))
        self.initial = copy.deepcopy(run.model)

    def objective(self, model, loss_module):
        model = copy.deepcopy(model).train()
        model.loss = copy.deepcopy(loss_module)
        with torch.no_grad():
            return float(model(*self.views)[0])

    def after_fit(self, run):
        self.before, self.after = (self.objective(m, run.model.loss) for m in (self.initial, run.model))


@pytest.mark.parametrize("method", PAIR_METHODS)
def test_every_method_trains_and_writes_the_run_directory(method, tmp_path):
    # each method with its own optimiser, augmentation and loss settings from the registry (nothing overridden
    # but sizes), as the fmnist-<method> presets use them
    loss = {"size": 128} if method == "moco_v2" else {}          # a queue that real keys fill within the run
    # MoCo v2's 0.03 per 256 images becomes 0.0075 at this batch of 64 under the linear rule: too small to move
    # in 8 steps, so its per-256 rate is used unscaled here (every other field stays the method's)
    # and it gets 4 epochs: with its strong 'simclr' crops, 8 steps are noise against the queue's drift
    optim, epochs = ({"lr_scaling": "none"}, 4) if method == "moco_v2" else ({}, 2)
    cfg = tiny(tmp_path / method, model={"method": method, "loss": loss}, optim=optim, train={"epochs": epochs})
    spec = get_method(method)
    assert (cfg.optim.name, cfg.optim.base_lr, cfg.data.augment) == (spec.optim["name"], spec.optim["base_lr"], spec.augment)
    probe = ObjectiveOnFixedViews()
    run = fit(cfg, hooks=default_hooks(cfg) + [probe])
    files = {p.name for p in (tmp_path / method).iterdir()}
    assert {"config.yaml", "metrics.jsonl", "epochs.jsonl", "spectra.jsonl", "summary.json", "tb", "checkpoints"} <= files
    assert probe.after < probe.before, f"{method}: loss on fixed views went {probe.before:.4f} -> {probe.after:.4f}"
    steps = read_jsonl(tmp_path / method / "metrics.jsonl")
    assert len(steps) == run.step and all(math.isfinite(r["loss"]) for r in steps)
    assert len(read_jsonl(tmp_path / method / "spectra.jsonl")) == 2 * (epochs + 1)   # epochs 0..E, two spaces
    assert run.summary["knn_acc"] is not None


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    det = {"deterministic": True, "epochs": 2}
    full = fit(tiny(tmp_path / "full", train=det))
    steps_per_epoch = full.data.steps_per_epoch
    stop = steps_per_epoch + 2                                   # in the middle of epoch 2
    part = fit(tiny(tmp_path / "part", train={**det, "max_steps": stop}))
    assert part.step == stop and part.stop_reason
    resumed = fit(tiny(tmp_path / "part", train=det), resume="auto")
    assert resumed.resumed_from is not None and resumed.step == full.step
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ in {different[:5]}"


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys, torch
    from mssl_workbench.engine.rundir import RunWriter
    writer = RunWriter(sys.argv[1]).start({}, method="matrix_ssl")
    writer.save_checkpoint(1, {"w": torch.ones(1000)})
    def dying_fsync(fd):                      # the process dies after the bytes went out, before the rename
        os.kill(os.getpid(), signal.SIGKILL)
    os.fsync = dying_fsync
    writer.save_checkpoint(2, {"w": torch.zeros(1000)})
""")


def test_killed_checkpoint_write_leaves_previous_loadable(tmp_path):
    r = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(tmp_path)], capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not (tmp_path / "checkpoints" / "step_00000002.pt").exists()
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "step_00000001.pt" and torch.equal(state["w"], torch.ones(1000))




def test_two_process_ddp_equals_one_process(tmp_path):
    common = ["--preset", "quickstart", "--quiet", "data.fraction=0.05", "data.augment=none",
              "model.backbone=resnet10t_mini", "model.proj_dim=64", "model.proj_hidden=128", "model.pred_hidden=32",
              "train.epochs=1", "train.max_steps=3", "train.batch_size=64", "train.log_every=1",
              "train.deterministic=true", "train.precision=fp32", "model.channels_last=false",     # the 1e-5 bound is fp32's
              "eval.monitor_samples=128", "eval.knn_train_samples=128", "eval.probe=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "mssl_workbench.cli.train", *common, "--output", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          f"--master_port={free_port()}", "-m", "mssl_workbench.cli.train", *common,
                          "--output", str(tmp_path / "two")], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    l1 = [r["loss"] for r in read_jsonl(tmp_path / "one" / "metrics.jsonl")]
    l2 = [r["loss"] for r in read_jsonl(tmp_path / "two" / "metrics.jsonl")]
    assert len(l1) == len(l2) == 3
    for a, b in zip(l1, l2):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (l1, l2)
    from test_runs_contract import check_run_contract
    for run in ("one", "two"): check_run_contract(tmp_path / run, method="matrix_ssl")


@pytest.mark.parametrize("argv,words", [
    (["--preset", "nope"], "unknown preset"),
    (["--preset", "quickstart", "train.epochz=1"], "did you mean epochs"),
    (["--preset", "quickstart", "train.batch_size=abc"], "must be an integer"),
    (["--preset", "quickstart", "data.root=/no/such/dir"], "/no/such/dir"),
    (["--preset", "quickstart", "model.loss.mu=-1"], "model.loss: MatrixSSLLoss: mu must be a finite number > 0"),
    (["--preset", "quickstart", "model.loss.lamdba=1"], "model.loss.lamdba is not an option"),
    (["--preset", "fmnist-mae", "model.loss.temperature=0.1"], "method mae has no loss options"),
])
def test_cli_bad_input_exits_2(argv, words, tmp_path, console):
    r = subprocess.run([console("mssl-train"), *argv, "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


class PoisonWeights(Hook):
    "Turns one weight to NaN after step `at` (a stand-in for a diverging run)"
    order = 1
    def __init__(self, at): self.at = at
    def after_step(self, run):
        if run.step == self.at:
            with torch.no_grad(): next(run.model.parameters()).view(-1)[0] = float("nan")


def test_non_finite_weights_stop_the_run_without_a_bad_checkpoint(tmp_path):
    cfg = tiny(tmp_path / "nan", train={"checkpoint_every_steps": 1, "epochs": 1})
    with pytest.raises(NonFiniteError, match=r"at step 2\b.*last good checkpoint: .*step_00000001\.pt"):
        fit(cfg, hooks=default_hooks(cfg) + [PoisonWeights(at=2)])
    path, state = latest_checkpoint(tmp_path / "nan")
    assert path.name == "step_00000001.pt"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_names_the_step(tmp_path):
    cfg = tiny(tmp_path / "nanloss", train={"checkpoint_every_steps": 0, "epochs": 1})
    hooks = [h for h in default_hooks(cfg) if not isinstance(h, Checkpointer)] + [PoisonWeights(at=1)]
    with pytest.raises(NonFiniteError, match=r"loss is nan at step 1 \(epoch 0\)"):
        fit(cfg, hooks=hooks)


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    run = fit(tiny(tmp_path / "bf16", model={"channels_last": True}, train={"precision": "bf16", "max_steps": 3}))
    losses = [r["loss"] for r in read_jsonl(tmp_path / "bf16" / "metrics.jsonl")]
    assert len(losses) == 3 and all(map(math.isfinite, losses))   # neither NaN nor ±inf
    assert run.model.backbone.model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


class LamdaInvRecorder(Hook):
    "Records the λ⁻¹ each forward of the loss used (a spy on MECLoss.forward; hooks no longer touch the loss)"
    def before_fit(self, run):
        self.seen, loss = [], run.model.loss
        forward = loss.forward
        def spy(*inputs):
            self.seen.append(loss.lamda_inv)
            return forward(*inputs)
        loss.forward = spy


def test_mec_follows_its_schedule_whatever_hooks_say(tmp_path):
    cfg = tiny(tmp_path / "mec", model={"method": "mec"}, train={"epochs": 1, "max_steps": 4})
    rec = LamdaInvRecorder()
    run = fit(cfg, hooks=[rec])                    # no default hooks at all: MEC's model sets λ⁻¹ itself
    want = mec_lamda_inv_schedule(cfg.train.batch_size, cfg.model.proj_dim, run.total_steps,
                                  min(run.warmup_steps, run.total_steps), eps_sq=cfg.model.loss["eps_sq"])
    assert len(rec.seen) == 4 and rec.seen == [float(v) for v in want[:4]], (rec.seen, want[:4])
    assert rec.seen[0] != rec.seen[-1]             # the warm-up moves it
    assert isinstance(run, RunState)               # the trainer has every field the hooks are written against


def test_hooks_do_not_import_the_training_loop():
    "The hooks are written against RunState (mssl_workbench.engine.contract): importing them loads no part of the loop that runs them"
    code = "import json, sys, mssl_workbench.engine.hooks; print(json.dumps(sorted(m for m in sys.modules if m.startswith('mssl_workbench'))))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = json.loads(r.stdout)
    assert "mssl_workbench.engine.contract" in loaded and "mssl_workbench.engine.loop" not in loaded, loaded
    import mssl_workbench.engine.hooks as hooks   # nor under TYPE_CHECKING
    src = Path(hooks.__file__).read_text()
    assert [l for l in src.splitlines() if "import" in l and ".train" in l] == [] and "TYPE_CHECKING" not in src
