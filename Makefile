# One entry point for people and CI. `make setup` is idempotent: it only reinstalls when
# pyproject.toml changed since the last install (the stamp file records that).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test test-faults demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# One test process per core (pytest-xdist): the broker tests spend most of their time waiting.
test: setup
	$(BIN)/python -m pytest -q -n auto -m "not faults"

# Fault injection against the broker (crashes, member moves, outages, refused writes): minutes.
test-faults: setup
	$(BIN)/python -m pytest -q -m faults

demo: setup
	$(BIN)/python -m detector.demo

bench: setup
	$(BIN)/detector bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out
