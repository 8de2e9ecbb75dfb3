# Two entry points for a newcomer (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test envtest lint typecheck bench clean

$(BIN)/eventmesh-health: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# Builds (once, cached outside the repo) or finds kube-apiserver + etcd; last line = their folder.
envtest:
	@bash hack/envtest/build.sh
