# Two commands for a fresh clone: `make demo` and `make test`. Both create the
# virtualenv in .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench
CODE := src tests examples bench

.PHONY: install asyncapi-schema demo docs test test-rabbitmq4 unit lint typecheck format bench bench-quick clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)

# The demo needs the library alone (pika): seconds, not the whole [dev] set.
DEMO_INSTALLED := $(VENV)/.installed-demo
$(DEMO_INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

demo: $(DEMO_INSTALLED)
	$(BIN)/domain-events demo

# The whole suite on the machine's RabbitMQ (3.x) and, at the same time, every
# broker-facing test again on a RabbitMQ 4.0 node that .ci/rabbitmq4 runs beside it
# (port 5673; the first run builds its Debian trixie root under /var/cache, about a
# minute; needs root). The two runs share no broker and mostly wait on the network, so
# side by side they take little more than the longer one; the 4.x run's output is kept
# in $(RABBITMQ4_LOG) and printed after the 3.x run's. Either failing fails the target.
RABBITMQ4_LOG := $(CURDIR)/.rabbitmq4-tests.log
test: lint typecheck docs asyncapi-schema
	@# The 4.0 node starts (its root built the first time) before either run: a build
	@# beside the 3.x run would load the machine while its timing-sensitive tests run.
	.ci/rabbitmq4 start >$(RABBITMQ4_LOG) 2>&1 || { cat $(RABBITMQ4_LOG); exit 1; }
	@$(MAKE) --no-print-directory test-rabbitmq4 >>$(RABBITMQ4_LOG) 2>&1 & rabbitmq4=$$!; \
	$(BIN)/pytest; status=$$?; \
	wait $$rabbitmq4; status4=$$?; \
	echo; echo "==== the same tests on RabbitMQ 4.0 (make test-rabbitmq4) ===="; \
	cat $(RABBITMQ4_LOG); \
	echo "RabbitMQ 3.x run: exit $$status; RabbitMQ 4.0 run: exit $$status4"; \
	test $$status -eq 0 && test $$status4 -eq 0

# .ci/rabbitmq4 reads the same RABBITMQ4_* settings from the environment.
RABBITMQ4_PORT ?= 5673
RABBITMQ4_URL := amqp://guest:guest@127.0.0.1:$(RABBITMQ4_PORT)/%2F
test-rabbitmq4: $(INSTALLED) asyncapi-schema
	.ci/rabbitmq4 start
	DEB_TEST_AMQP_PORT=$(RABBITMQ4_PORT) DEB_TEST_RABBITMQCTL="$(CURDIR)/.ci/rabbitmq4 ctl" \
	DEB_TEST_BROKER_START="$(CURDIR)/.ci/rabbitmq4 start" \
	DOMAIN_EVENT_BROKER=$(RABBITMQ4_URL) DEB_TEST_BROKER_URL=$(RABBITMQ4_URL) \
	$(BIN)/pytest -m "not cluster and not tls" --ignore=tests/unit $(PYTEST_ARGS); \
	status=$$?; [ $$status -eq 0 ] || .ci/rabbitmq4 logs; .ci/rabbitmq4 stop; exit $$status

# The documentation site, built strictly: a broken link, a missing page in the nav or an
# API reference that no longer resolves fails the build (about 2 s). Output in site/.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The official AsyncAPI JSON Schemas (npm @asyncapi/specs 6), which tests/test_asyncapi.py
# validates the generated document against; fetched once into the user's cache.
ASYNCAPI_SPECS := $(HOME)/.cache/domain-event-broker/asyncapi-specs-6
ASYNCAPI_SCHEMA := $(ASYNCAPI_SPECS)/node_modules/@asyncapi/specs/schemas/3.0.0.json
$(ASYNCAPI_SCHEMA):
	mkdir -p $(ASYNCAPI_SPECS)
	npm install --prefix $(ASYNCAPI_SPECS) --no-audit --no-fund --silent @asyncapi/specs@6

asyncapi-schema: $(ASYNCAPI_SCHEMA)

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
	rm -rf $(VENV) build dist site src/*.egg-info .mypy_cache .ruff_cache
