# The two set-up commands of the README are `make quickstart` and `make test`; each works on a fresh
# Linux machine with Python 3.11 and needs nothing else (the venv and the install are made on demand).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test test-fast install check-sync readme export clean-nbs data-full docs bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install only when the package metadata changes (an editable install picks up code changes).
$(STAMP): setup.py settings.ini | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

## (1) install and run the main job on the embedded data
quickstart: install
	$(BIN)/mssl-train --preset quickstart

## (2) install and run every test: all notebooks (slow cells included) and pytest (browser tests included)
test: install
	bash tools/install_browser.sh $(VENV)
	$(BIN)/nbdev_test --flags slow --n_workers 2
	$(BIN)/pytest -q tests

## the fast subset for the edit-test loop
test-fast: install
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/pytest -q -m "not slow" tests

export: install
	$(BIN)/nbdev_export
	$(BIN)/python -c "from mssl_workbench.cli.train import write_preset_index; write_preset_index()"

clean-nbs: install
	$(BIN)/nbdev_clean

## the documentation site, offline, into _docs/ (every notebook executed; see tools/build_docs.py)
docs: install
	$(BIN)/python tools/build_docs.py --n-workers 2

## benchmarks: each prints a table and writes JSON to benchmarks/results/
bench: install
	for b in data_load matrix_log losses augment train_step; do $(BIN)/python benchmarks/$$b.py --quick || exit 1; done

readme: install
	$(BIN)/python tools/make_readme.py

## CI's nbdev discipline: cleaning, exporting (with the generated preset index) and regenerating README.md change no tracked file
check-sync: install
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	$(BIN)/python -c "from mssl_workbench.cli.train import write_preset_index; write_preset_index()"
	$(BIN)/python tools/make_readme.py
	@git add -N mssl_workbench README.md 2>/dev/null || true
	@git diff --exit-code --stat -- nbs mssl_workbench README.md \
	  || { echo "check-sync: nbdev_clean / nbdev_export / README generation changed the files above: run 'make check-sync' and commit"; exit 1; }

## optional: the full Fashion-MNIST from Debian (root + apt only; nothing requires it)
data-full:
	apt-get install -y dataset-fashion-mnist
