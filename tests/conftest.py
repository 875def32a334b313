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
