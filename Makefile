# The single entry point: `make demo`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: venv demo test lint bench chaos fuzz train train-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(TRAIN_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,train]'
	touch $(TRAIN_STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/python -m origin demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m benchmarks suite

# The long fault and abuse runs (issue #17), on demand; `make test` runs their short versions.
chaos: venv
	$(BIN)/python -m benchmarks chaos --kills 1000

fuzz: venv
	$(BIN)/python -m benchmarks fuzz --inputs 100000

train: $(TRAIN_STAMP)
	$(BIN)/python -m models train

train-check: $(TRAIN_STAMP)
	$(BIN)/python -m models train --check

# Refresh the pinned versions on purpose: `make lock`, review the diff, commit it.
lock:
	rm -rf /tmp/waypost-lock && $(PYTHON) -m venv /tmp/waypost-lock
	/tmp/waypost-lock/bin/pip install -q -e '.[dev,train]'
	/tmp/waypost-lock/bin/pip freeze --exclude-editable | grep -vi '^waypost' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
