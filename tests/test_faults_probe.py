"""What the fresh probe of issue 30 (`tools/probe.py`) found, through the real console scripts on runs the real `mssl-train`
made: a generator or `mssl-study init` under a regular file, a `--plugin` that fails inside its own code, `mssl-eval` and
`mssl-study` without a command, `train=3` under `--quiet` (was replaced by `{quiet: true}` and trained on defaults) — each one
stderr line naming the fix, exit 2; `mssl-eval --output` inside another run refused (its readers would take the file for
that run's result); the run's own-data note after the option checks (a refusal is one line); `gsm8k --max-new-tokens 0`
refused (it silently meant the run's default and replaced the earlier result); `gsm8k --dry-run` of a checkpoint outside its
run reads the checkpoint's protocol; `mssl-eval` on a run whose config.yaml is gone or a loose checkpoint reads the run's data
from the checkpoint; step files no manifest records are named; SIGINT/SIGTERM stop an evaluation with one line and no result.
Every pre-existing folder's files are compared by sha256 before and after."""
import json
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from console import BIN, ENV, digest, imagenet_run, imagenet_tree, mssl, one_line, same_but
from mssl_workbench.data.fashion_mnist import SAMPLE_FASHION_MNIST

pytestmark = pytest.mark.slow      # every case starts a console script; `quick` and `lm` are conftest's session runs


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return imagenet_tree(tmp_path_factory.mktemp("tree") / "imagenet")


@pytest.fixture(scope="module")
def inet(tmp_path_factory, tree):
    "A real run of the ImageNet preset on a tiny ImageNet-layout folder"
    return imagenet_run(tmp_path_factory.mktemp("inet") / "run", tree)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setitem(ENV, "MSSL_CACHE", str(tmp_path / "cache"))


def test_generators_under_a_regular_file_are_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    one_line(mssl("mssl-eval", "make-synthetic-coco", tmp_path / "f" / "coco", "--val", "1"), 2, f"{tmp_path / 'f'} is a file, not a folder")
    one_line(mssl("mssl-study", "init", tmp_path / "f" / "study.yaml"), 2, f"{tmp_path / 'f'} is a file, not a folder", "another file name")
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["f"] and (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("body, words", [("def f(:\n    pass\n", ["SyntaxError", "plug.py, line 1"]),
                                         ("x = 1\nraise RuntimeError('plugin broke')\n", ["RuntimeError: plugin broke", "plug.py, line 2"])])
def test_a_plugin_failing_in_its_own_code_is_one_line(tmp_path, body, words):
    (tmp_path / "plug.py").write_text(body)
    one_line(mssl("mssl-train", "--preset", "quickstart", "--plugin", "plug", "--dry-run", cwd=tmp_path), 2,
             "--plugin plug: importing it failed with", *words, "python -c 'import plug' shows the traceback")


def test_commands_without_a_subcommand_say_so_on_stderr():
    for script, words in (("mssl-eval", "give a COMMAND"), ("mssl-study", "give a command")):
        r = mssl(script)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and lines[0].startswith("usage:") and words in lines[-1] and "Traceback" not in r.stderr, r.stderr


def test_a_section_set_to_a_scalar_is_refused_under_quiet(tmp_path):
    "train=3 with --quiet (or $CI) was replaced by {quiet: true}: the run trained on the schema's defaults"
    for argv in (["--dry-run"], ["--output", tmp_path / "run"]):
        one_line(mssl("mssl-train", "--preset", "quickstart", "--quiet", "train=3", *argv), 2, "train must be a mapping")
    assert not (tmp_path / "run").exists()


def test_config_file_backbone_kwargs_empty_clears_the_presets(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  backbone_kwargs: {}\n")
    r = mssl("mssl-train", "--preset", "quickstart", "--config", tmp_path / "c.yaml", "--dry-run")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["model"]["backbone_kwargs"] == {}, r.stderr


def test_eval_output_inside_another_run_is_refused(quick, lm, copy_of):
    run, other = copy_of(quick), copy_of(lm)
    before, other_before = digest(run), digest(other)
    one_line(mssl("mssl-eval", "knn", run, "--output", other / "eval" / "knn.json"), 2,
             f"inside the run directory {other}", "write it outside")
    one_line(mssl("mssl-eval", "coco-score", "--gt", other / "gt.json", "--detections", other / "d.json", "--output", other / "eval" / "x.json"),
             2, f"inside the run directory {other}")
    assert digest(run) == before and digest(other) == other_before


def test_option_errors_on_an_imagefolder_run_are_one_line(inet, copy_of):
    "The note 'evaluating on its own data' comes after the options are checked: a refusal is one line"
    run = copy_of(inet)
    before = digest(run)
    one_line(mssl("mssl-eval", "knn", run, "ks=[0]"), 2, "ks=[0] is not allowed")
    one_line(mssl("mssl-eval", "knn", run, "ks=[5]", "--output", run / "config.yaml"), 2, "did not write it")
    assert digest(run) == before


@pytest.mark.parametrize("how", ["config.yaml gone", "loose checkpoint"])
def test_the_checkpoints_config_names_the_data_when_config_yaml_is_missing(inet, tree, tmp_path, how):
    run = shutil.copytree(inet, tmp_path / "run")
    if how == "config.yaml gone": (run / "config.yaml").unlink(); target, out = run, run / "eval" / "knn.json"
    else:
        target = shutil.copy2(next((run / "checkpoints").glob("step_*.pt")), tmp_path / "loose.pt")
        out = tmp_path / "eval" / "knn.json"                  # next to a loose checkpoint, as documented
    r = mssl("mssl-eval", "knn", target, "ks=[5]", "device=cpu", "--quiet")
    assert r.returncode == 0 and "root=search" not in r.stderr, r.stderr[-3000:]
    knn = json.loads(out.read_text())
    assert (knn["n_train"], knn["n_val"], knn["data_source"]) == (32, 12, str(tree / "train"))


def test_step_files_no_manifest_records_are_named(quick, copy_of):
    run = copy_of(quick)
    (run / "checkpoints" / "manifest.jsonl").unlink()
    before = digest(run)
    one_line(mssl("mssl-eval", "knn", run), 2, "step_*.pt file(s)", "no manifest.jsonl records them", "pass one as a checkpoint file")
    assert digest(run) == before


def test_gsm8k_max_new_tokens_0_is_refused_and_the_result_kept(lm, copy_of, tmp_path):
    run = copy_of(lm)
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Ann has 2 apples and gets 3 more. How many?", "answer": "#### 5"}) + "\n")
    before = digest(run)
    for extra in ([data], ["--dry-run"]):
        one_line(mssl("mssl-eval", "gsm8k", run, *extra, "--max-new-tokens", "0"), 2, "--max-new-tokens must be at least 1, got 0")
    assert digest(run) == before


def test_gsm8k_dry_run_of_a_checkpoint_outside_its_run_reads_its_protocol(lm, tmp_path):
    loose = shutil.copy2(lm / "checkpoints" / "step_00000004.pt", tmp_path / "loose.pt")
    r = mssl("mssl-eval", "gsm8k", loose, "--dry-run")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["max_new_tokens"] == 8, (r.stdout, r.stderr)   # the run's, not 512


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_an_evaluation_with_one_line_and_no_result(quick, copy_of, sig):
    run = copy_of(quick)
    before = digest(run)
    p = subprocess.Popen([str(BIN / "mssl-eval"), "linear", str(run), f"root={SAMPLE_FASHION_MNIST}", "--preset", "fmnist-sample", "epochs=3000",
                          "--no-cache", "device=cpu", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # as at a terminal (a background job ignores it)
    time.sleep(12)                                   # past the imports and the features: in the head's epochs
    assert p.poll() is None, p.communicate()
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.strip()]
    assert p.returncode == 128 + sig and len(lines) == 1 and "Traceback" not in err, (p.returncode, err[-3000:])
    assert f"mssl-eval linear: stopped by {sig.name} before it finished; no result was written" in lines[0]
    assert digest(run) == before


def test_a_missing_data_root_under_torchrun_is_one_line_before_any_process_starts(tmp_path):
    "The README's own torchrun line with its placeholder root: one refusal from the launcher, not one per process and a ChildFailedError"
    r = mssl("mssl-train", "--preset", "imagenet-matrixssl-r50-100ep", f"data.root={tmp_path / 'imagenet'}", "--nproc_per_node", "4",
             "--output", str(tmp_path / "run"), timeout=120)
    one_line(r, 2, "does not exist", "pass the folder that holds the images")
    assert "ChildFailedError" not in r.stderr and not (tmp_path / "run").exists()
    (tmp_path / "imagenet").write_text("not a folder")
    one_line(mssl("mssl-train", "--preset", "imagenet-matrixssl-r50-100ep", f"data.root={tmp_path / 'imagenet'}", "--nproc_per_node", "2",
                  "--output", str(tmp_path / "run"), timeout=120), 2, "is a file")
