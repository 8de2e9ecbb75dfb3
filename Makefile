# Two entry points for a newcomer (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXAMPLE ?= examples/kafka-quota-reached

.PHONY: bench-serve demo test browser compiled envtest kstatus knative knative-v012 tools jaeger lint typecheck unit bench bench-analysis bench-check bench-growth bench-probe bench-detection bench-yaml clean

# The virtualenv with the project and its development tools; rebuilt when pyproject changes.
# (Installed as source; `compiled` below puts the compiled analysis beside it.)
$(BIN)/eventmesh-health: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	EVENTMESH_HEALTH_BUILD=pure $(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The analysis compiled by mypyc (src/eventmesh_health/compiled.py), built once per source digest
# (cached outside the repo) and put beside its sources; needs a C compiler and Python's headers.
# Last line = the cached build's folder. `make demo` runs the pure-Python source without one.
compiled: $(BIN)/eventmesh-health
	@PYTHON=$(BIN)/python bash hack/compiled/build.sh

# Installs, then checks a bundled dump of a broken mesh and explains the broken application.
# (check exits 1 when the mesh is not healthy: that is the point of the example.)
demo: $(BIN)/eventmesh-health
	@PYTHON=$(BIN)/python bash hack/compiled/build.sh >/dev/null \
	  || echo "demo: no compiled analysis (above); running its pure-Python source, slower" >&2
	@echo '$$ eventmesh-health check --snapshot $(EXAMPLE)'
	@$(BIN)/eventmesh-health check --snapshot $(EXAMPLE) || test $$? -eq 1
	@echo
	@echo '$$ eventmesh-health explain commerce-mock --snapshot $(EXAMPLE)'
	@$(BIN)/eventmesh-health explain commerce-mock --snapshot $(EXAMPLE) || test $$? -eq 1

# Debian's Chromium for the browser tests (tests/test_web_browser.py, Playwright drives it by its
# path; nothing is downloaded at test time): installed with apt-get when absent; fails clearly
# when it cannot be (no apt-get, not root). CHROMIUM=/path/to/chromium uses another one.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then echo "browser: $(CHROMIUM)"; \
	elif [ "$(CHROMIUM)" = /usr/bin/chromium ] && command -v apt-get >/dev/null \
	     && [ "$$(id -u)" = 0 ]; then \
	  echo "browser: installing Debian's chromium (apt-get install -y chromium)"; \
	  apt-get install -y --no-install-recommends chromium >/dev/null \
	    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; } \
	    || { echo "browser: apt-get install chromium failed" >&2; exit 1; }; \
	  test -x "$(CHROMIUM)" || { echo "browser: still no $(CHROMIUM)" >&2; exit 1; }; \
	else \
	  echo "browser: no Chromium at $(CHROMIUM) and cannot install it here (needs root and" \
	       "apt-get: sudo apt-get install chromium), or set CHROMIUM=/path/to/chromium" >&2; \
	  exit 1; \
	fi

# Builds (once, cached outside the repo) or finds kube-apiserver + etcd; last line = their folder.
envtest:
	@bash hack/envtest/build.sh

# Builds (once, cached outside the repo) the kstatus benchmark peer; last line = its path.
kstatus:
	@bash hack/kstatus/build.sh

# Builds (once, cached outside the repo) real Knative Eventing (reconcilers, IMC dispatcher, broker
# ingress and filter) and copies the YAML the knative tests apply; last line = their folder.
knative:
	@bash hack/knative/build.sh

# The same for Knative Eventing v0.12.0 (Kyma 1.x): controller, broker ingress/filter, IMC
# controller/dispatcher, and the v0.12 YAML (the Kyma 1.x tests, tests/knative/v012.py).
knative-v012:
	@bash hack/knative/build-v012.sh

# Builds (once, cached outside the repo) helm and promtool from their Go modules; last line = their folder.
tools:
	@bash hack/tools/build.sh

# Builds (once, cached outside the repo) Jaeger v1.75.0 from its Go module, the tracing backend
# the trace tests feed and query; last line = its folder.
jaeger:
	@bash hack/jaeger/build.sh

lint: $(BIN)/eventmesh-health
	$(BIN)/ruff check src tests benchmarks deploy/grafana

typecheck: $(BIN)/eventmesh-health
	$(BIN)/mypy

# In a network namespace where only loopback leads anywhere: a packet to any other address
# fails the run (hack/loopback-only.sh).
unit: $(BIN)/eventmesh-health compiled envtest knative knative-v012 tools jaeger browser
	EVENTMESH_HEALTH_CHROMIUM=$(CHROMIUM) hack/loopback-only.sh $(BIN)/pytest

# Everything CI runs: install, compile the analysis, build the control-plane, Knative, helm,
# promtool and Jaeger binaries, Chromium for the browser tests, lint, types, all tests.
test: $(BIN)/eventmesh-health compiled envtest knative knative-v012 tools jaeger browser lint typecheck unit

# Both, one after the other (never in parallel: each measures the machine).
bench:
	$(MAKE) bench-analysis
	$(MAKE) bench-check

# The analysis alone, in-process: CPU time and allocation per size.
bench-analysis: $(BIN)/eventmesh-health compiled
	$(BIN)/python benchmarks/bench_analysis.py

# Whole processes on the same dump: check (JSON, YAML) against kstatus (JSON), 1,000, 4,545 and
# 10,000 applications x 3 namespaces; needs Go to build kstatus once.
bench-check: $(BIN)/eventmesh-health compiled kstatus
	$(BIN)/python benchmarks/bench_check.py

# check's time and peak RSS against objects (1k to 550k): the README's cost-growth table.
bench-growth: $(BIN)/eventmesh-health
	$(BIN)/python benchmarks/bench_check.py --growth

# serve against the envtest API server loaded with the synthetic mesh: sync, detection p50/p99,
# RSS, quiet-minute requests. Default 1,000 applications x 3 (~10 min); the README's 10,000-row
# run: BENCH_SERVE_ARGS="--apps 1000 10000 --growth 18 182 1818 4545 --write-max 1000" (~45 min).
bench-serve: $(BIN)/eventmesh-health envtest
	$(BIN)/python benchmarks/bench_serve.py $(BENCH_SERVE_ARGS)

# Heartbeat receiver (one core) and sender throughput on loopback; needs 2 CPUs, ~2 min.
bench-probe: $(BIN)/eventmesh-health
	$(BIN)/python benchmarks/bench_probe.py

# Needs the envtest binaries (kube-apiserver + etcd): time to report/clear data-plane faults.
bench-detection: $(BIN)/eventmesh-health envtest knative
	$(BIN)/python benchmarks/bench_detection.py

# YAML loaders compared for reading dumps (installs the candidates that are not ours).
bench-yaml: $(BIN)/eventmesh-health
	$(BIN)/pip install --quiet fastyaml-rs ryaml rapidyaml
	$(BIN)/python benchmarks/bench_yaml.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build
	find src -name "*.so" -delete
