# Two commands for a newcomer: `make test` and `make demo`. Everything else is for developers.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: test demo lint typecheck bench chaos chaos-ci clean deploy-rules test-pythons

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Creates the virtualenv, installs the project with its test extras, fetches Kafka if missing, runs pytest.
test: $(BIN)/.installed
	$(BIN)/kafka-lfs-relay sandbox fetch
	$(BIN)/pytest $(PYTEST_ARGS)

# Failover + LFS offload + hydration on the embedded sandbox, then a byte-for-byte check (DEMO_ARGS=--keep).
demo: $(BIN)/.installed
	$(BIN)/kafka-lfs-relay sandbox fetch
	$(BIN)/kafka-lfs-relay demo $(DEMO_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Every benchmark scenario on fresh sandbox clusters, each a separate step (a: small-record throughput,
# with the Go baseline bench/gorelay, which `go build` makes on first use (Go 1.26+, franz-go from the Go
# module proxy); b: latency, c/d: LFS offload/hydrate, e: failover with the relay's default health checks
# (request_timeout 1s) and again with request_timeout 2s, f: start-up on a target holding 1M foreign
# records, g: re-homing envelopes vs a raw S3 copy, h: verify on a clean 100k-record mirror), then
# docs/benchmarks.md + .png.
# BENCH_ARGS="--runs 1" for a quick pass; one scenario alone: .venv/bin/python -m bench.latency --help.
# BENCH_A_ARGS reaches scenario a only, e.g. BENCH_A_ARGS="--candidate-rev 92ab6cf" adds the release as a contender.
bench: $(BIN)/.installed
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/kafka-lfs-relay sandbox fetch
	$(BIN)/python -m bench.relay_throughput $(BENCH_ARGS) $(BENCH_A_ARGS)
	$(BIN)/python -m bench.latency $(BENCH_ARGS)
	$(BIN)/python -m bench.lfs_offload
	$(BIN)/python -m bench.hydrate
	$(BIN)/python -m bench.failover $(BENCH_ARGS)
	$(BIN)/python -m bench.failover --request-timeout 2 --name e_failover_rt2 $(BENCH_ARGS)
	$(BIN)/python -m bench.startup $(BENCH_ARGS)
	$(BIN)/python -m bench.rehome $(BENCH_ARGS)
	$(BIN)/python -m bench.verify $(BENCH_ARGS)
	$(BIN)/python -m bench.wide_estate $(BENCH_ARGS)
	$(BIN)/python -m bench.report

# Chaos soak (docs/reliability.md): mirror+LFS with failover, hydration and group mode at once on
# the sandbox, a seeded nemesis (kill -9, SIGSTOP, broker and S3 outages, delete_records, a gap, bursts),
# then a record-by-record check. Default 20 minutes of faults; output in build/chaos/<time>-seed<seed>/.
# CHAOS_ARGS="--duration 3600 --seed 7 --publish" runs an hour and appends its table to docs/reliability.md.
chaos: $(BIN)/.installed
	$(BIN)/kafka-lfs-relay sandbox fetch
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# The short chaos run CI makes: 3 minutes of faults and three kinds of operations from a fixed seed, sized for
# a 2-core machine (the 20-minute run of docs/reliability.md has every kind).
CHAOS_CI_ARGS = --duration 180 --seed 15 --rate 60 --large-fraction 0.01 --group-rate 150 --min-faults 15 \
    --ops rename,future_timestamps,rolling_restart --ops-interval 15:30
chaos-ci: $(BIN)/.installed
	$(BIN)/kafka-lfs-relay sandbox fetch
	$(BIN)/python -m bench.chaos $(CHAOS_CI_ARGS) --out build/chaos/ci

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus-alerts.yml (the one source of the alerts).
deploy-rules: $(BIN)/.installed
	$(BIN)/python -m tests.deploy.rules

# The unit tests on every other CPython from 3.10 up found here (pyenv's or on PATH; `make test` runs
# everything on python3, 3.11 here), each in its own venv under build/py/, as many at once as there
# are cores (each run is one process on one core); each version's output is printed as one block.
# The editable installs take turns: each writes the package's metadata into this checkout.
PYTHONS ?= 3.10 3.12 3.13
test-pythons:
	@$(MAKE) --no-print-directory -j $$(nproc) --output-sync=target $(addprefix test-on-,$(PYTHONS))

test-on-%:
	@set -e; v=$*; \
	py=$$(ls $$HOME/.pyenv/versions/$$v.*/bin/python$$v 2>/dev/null | tail -1); \
	[ -n "$$py" ] || py=$$(command -v python$$v || true); \
	if [ -z "$$py" ]; then echo "python$$v: not on this machine, skipped"; exit 0; fi; \
	env=build/py/$$v; mkdir -p build/py; \
	[ -x $$env/bin/pytest ] || { $$py -m venv $$env && $$env/bin/pip install --quiet --upgrade pip && \
	  flock build/py/.install $$env/bin/pip install --quiet -e '.[test]'; }; \
	echo "== unit tests on $$($$env/bin/python --version)"; \
	$$env/bin/pytest -q -p no:cacheprovider tests/unit
