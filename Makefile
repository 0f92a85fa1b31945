# Two entry points: `make run` (the service on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint bench fuzz

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# A development key is made once, kept in .dev-key (git-ignored). `make run` first runs
# `flask --app app db upgrade`, which migrates the database and, with APIKEYS_BOOTSTRAP_KEY
# set, seeds that key: the app itself never touches the database at start.
.dev-key: | $(BIN)/.installed
	umask 077 && $(BIN)/flask --app app keys generate > $@

run: $(BIN)/.installed .dev-key
	@echo "API key (also in .dev-key): $$(cat .dev-key)"
	APIKEYS_BOOTSTRAP_KEY=$$(cat .dev-key) $(BIN)/flask --app app db upgrade > /dev/null
	$(BIN)/flask --app app run --port $(PORT)

# The sidecar's benchmark (bench/README.md); needs wrk: apt-get install -y wrk
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# A release's longer contract fuzzing and model runs: examples per operation and mode,
# scenarios along the links, and state-machine runs (CI's test run uses 25, 25 and 50).
FUZZ_EXAMPLES ?= 1000
fuzz: $(BIN)/.installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_contract.py tests/test_model.py
