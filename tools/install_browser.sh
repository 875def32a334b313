#!/usr/bin/env bash
# Install what the browser tests (tests/test_dashboard_browser.py, tests/test_docs_site.py) need:
# Debian's `chromium` (the browser; Playwright's own downloaded browsers do not work offline),
# Playwright for Python (the driver) in the project's virtual environment, and — when `make install`
# has not already put them there — JupyterLab, anywidget, nbconvert and latex2mathml.
# Idempotent: when both are present it only checks and exits within a second or two.
# Usage: tools/install_browser.sh [VENV]   (default: .venv next to this script's parent folder)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${VENV:-$ROOT/.venv}}"
PY="$VENV/bin/python"
CHROMIUM=/usr/bin/chromium

if [ ! -x "$PY" ]; then
  echo "install_browser.sh: no Python at $PY: create the environment first (make install)" >&2
  exit 2
fi

if [ -x "$CHROMIUM" ]; then
  echo "chromium: present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
else
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      echo "install_browser.sh: $CHROMIUM is missing and this is not root: run 'apt-get install -y chromium' as root" >&2
      exit 2
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: $CHROMIUM is missing and there is no apt-get: install Chromium so that it lies at $CHROMIUM" >&2
    exit 2
  fi
  echo "chromium: installing with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=300 update -q
  $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends chromium fonts-dejavu-core
  "$CHROMIUM" --version
fi

if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('playwright') is None)"; then
  echo "playwright: present"
else
  echo "playwright: installing into $VENV (never 'playwright install': the tests drive $CHROMIUM)"
  "$PY" -m pip install -q "playwright>=1.40"
fi

# one interpreter start, no imports: find_spec only looks the modules up
read -r -a missing <<< "$("$PY" - <<'PYEOF'
import importlib.util
wanted = {"jupyterlab": "jupyterlab>=4", "anywidget": "anywidget>=0.9", "nbconvert": "nbconvert>=7", "latex2mathml": "latex2mathml>=3"}
print(" ".join(req for mod, req in wanted.items() if importlib.util.find_spec(mod) is None))
PYEOF
)"
if [ ${#missing[@]} -gt 0 ]; then
  echo "python packages: installing ${missing[*]}"
  "$PY" -m pip install -q "${missing[@]}"
else
  echo "python packages: jupyterlab, anywidget, nbconvert, latex2mathml present"
fi
