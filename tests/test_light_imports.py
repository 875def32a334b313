"""The console scripts answer --help, --version and --list-presets without importing torch (issue 21, item 5).

Each command runs in a fresh interpreter in which torch, torchvision, timm and transformers cannot be imported
(`sys.modules[name] = None` makes `import name` raise ImportError), through the same `main` its console script calls.
Its output must equal the output of the same command with those packages importable. How fast these commands start
is measured by benchmarks/cli_startup.py, not asserted here.

`mssl-eval gsm8k --help` is covered too (issue 27, item 5): its arguments come from `evaluation.gsm8k` and `lm.data`,
which import torch only inside their functions; `mssl-eval --list-presets` lists every protocol's presets.
"""
import json
import subprocess
import sys

import pytest

import mssl_workbench

HEAVY = ("torch", "torchvision", "timm", "transformers")

# the console scripts' entry points (settings.ini: console_scripts)
ENTRY = {"mssl-train": "mssl_workbench.cli.train", "mssl-spectrum": "mssl_workbench.reports.spectrum", "mssl-eval": "mssl_workbench.cli.evaluate",
         "mssl-study": "mssl_workbench.cli.study"}


def run_main(prog: str, *argv: str, block: bool = True) -> subprocess.CompletedProcess:
    "Run `prog argv` through its entry point's `main` in a new interpreter, with the heavy packages blocked or not"
    code = "\n".join([
        "import sys",
        *([f"for name in {HEAVY!r}: sys.modules[name] = None"] if block else []),
        f"from {ENTRY[prog]} import main",
        f"sys.argv = [{prog!r}, *{json.dumps(list(argv))}]",
        "sys.exit(main())",
    ])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def ok_without_torch(prog: str, *argv: str) -> str:
    "stdout of the command with torch blocked, after checking it exits 0 with nothing on stderr"
    r = run_main(prog, *argv)
    assert r.returncode == 0 and not r.stderr, f"{prog} {' '.join(argv)} without torch: exit {r.returncode}\n{r.stderr[-3000:]}"
    return r.stdout


def same_as_with_torch(prog: str, *argv: str) -> str:
    "The command's stdout without torch, checked equal to its stdout with torch importable"
    light = ok_without_torch(prog, *argv)
    full = run_main(prog, *argv, block=False)
    assert full.returncode == 0, full.stderr[-3000:]
    assert light == full.stdout
    return light


def test_the_block_works():
    r = subprocess.run([sys.executable, "-c", f"import sys\nfor n in {HEAVY!r}: sys.modules[n] = None\nimport torch"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "import of torch halted" in r.stderr   # ModuleNotFoundError, an ImportError


def test_mssl_train_help():
    out = same_as_with_torch("mssl-train", "--help")
    assert out.startswith("usage: mssl-train") and "--list-presets" in out and "--slurm" in out and "--nproc_per_node" in out


def test_mssl_train_version():
    assert ok_without_torch("mssl-train", "--version").strip() == f"mssl-train {mssl_workbench.__version__}"


def test_mssl_train_list_presets_is_the_registry():
    "Without torch, --list-presets prints every preset of the real registry (built with torch) with its note, in order"
    out = ok_without_torch("mssl-train", "--list-presets")
    listing = subprocess.run(
        [sys.executable, "-c", "from mssl_workbench.cli.train import PRESETS\n"
                               "for name, (_, note) in PRESETS.items(): print(f'{name:36s} {note}')"],
        capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr[-3000:]
    assert out == listing.stdout
    names = [line.split()[0] for line in out.splitlines()]
    assert names[0] == "quickstart" and "fmnist-simclr" in names and "imagenet-matrixssl-r50-400ep" in names
    assert "fmnist-mmae" in names and "lm-arith-mce" in names     # the M-MAE plugin's and the language models' presets


def test_mssl_train_imports_no_heavy_module_for_help():
    "Importing the entry point loads none of the heavy packages (nor numpy's users: data, methods, train)"
    code = ("import sys\nfrom mssl_workbench.cli.train import main\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'timm', 'transformers'} "
            "or m in {'mssl_workbench.data.fashion_mnist', 'mssl_workbench.data.augment', 'mssl_workbench.data.folders', 'mssl_workbench.data.datasets', 'mssl_workbench.methods.registry', 'mssl_workbench.engine.loop', 'mssl_workbench.engine.image', 'mssl_workbench.lm.train'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


def test_mssl_spectrum_help():
    out = same_as_with_torch("mssl-spectrum", "--help")
    assert out.startswith("usage: mssl-spectrum") and "--space" in out


def test_mssl_spectrum_version():
    assert ok_without_torch("mssl-spectrum", "--version").strip() == f"mssl-spectrum {mssl_workbench.__version__}"


EVAL_HELP = [("--help",), ("linear", "--help"), ("knn", "--help"), ("select", "--help"), ("semisup", "--help"),
             ("finetune", "--help"), ("coco", "--help"), ("coco-score", "--help"), ("export-detectron2", "--help"),
             ("make-synthetic-coco", "--help"), ("linear", "--list-presets"), ("gsm8k", "--help"), ("--list-presets",)]


@pytest.mark.parametrize("argv", EVAL_HELP, ids=[" ".join(a) for a in EVAL_HELP])
def test_mssl_eval_help(argv):
    out = same_as_with_torch("mssl-eval", *argv)
    assert out.strip()


def test_mssl_study_help_and_init(tmp_path):
    "mssl-study --help, run --help and init (a commented study file) answer without torch"
    out = same_as_with_torch("mssl-study", "--help")
    assert out.startswith("usage: mssl-study") and "init" in out and "report" in out and "status" in out
    assert "--executor" in same_as_with_torch("mssl-study", "run", "--help")
    r = run_main("mssl-study", "init", str(tmp_path / "study.yaml"))
    assert r.returncode == 0 and not r.stderr, r.stderr[-2000:]
    assert (tmp_path / "study.yaml").read_text().startswith("# A comparative study for mssl-study")

