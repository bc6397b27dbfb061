# Two commands for a fresh clone: `make demo` and `make test`. Both create the
# virtualenv in .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench
CODE := src tests examples bench

.PHONY: install demo test unit lint typecheck format bench bench-quick clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/domain-events demo

test: lint typecheck
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

typecheck: $(INSTALLED)
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix $(CODE)
	$(BIN)/ruff format $(CODE)

# Benchmarks against the local RabbitMQ, each figure beside raw pika / aio-pika
# measured in the same run (a vhost of its own; results in bench/results/).
bench: $(BENCH_INSTALLED)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(BENCH_INSTALLED)
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache
