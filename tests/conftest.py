import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def console():
    "Path of an installed console script of this environment"
    def find(name: str) -> str:
        path = BIN / name
        assert path.exists(), f"{path} missing: install the package first (make install)"
        return str(path)
    return find


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of real console-script runs (make test-fast leaves them out)")


# ---- the real runs the fault tests (tests/test_faults_*.py) start from: made once per session by the real mssl-train,
# read-only for the tests; a test that changes a run works on `copy_of(run)`
@pytest.fixture(scope="session")
def quick(tmp_path_factory) -> Path:
    "A real quickstart run, tiny (its preset's resnet10t_mini_nopool with the preset's backbone_kwargs)"
    from console import QUICK, train_run
    return train_run(tmp_path_factory.mktemp("quick") / "run", *QUICK)


@pytest.fixture(scope="session")
def lm(tmp_path_factory) -> Path:
    "A real run of an LM preset, tiny (4 steps, checkpoints at 2 and 4)"
    from console import LM_TINY, train_run
    return train_run(tmp_path_factory.mktemp("lm") / "lm-run", *LM_TINY)


@pytest.fixture
def copy_of(tmp_path):
    "A copy of a run under this test's tmp_path (same folder name), to change or to write next to"
    return lambda run: shutil.copytree(run, tmp_path / run.name)
