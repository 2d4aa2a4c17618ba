# Hookline: `make run` runs it, `make test` tests it. Everything installs on first use.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: run up down test unit lint bench receiver clean deps infra browser screenshots helm cluster promtool

$(VENV_STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 (3.11+) is required"; exit 1; }
	@[ -x $(PY) ] || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

deps: $(VENV_STAMP)
	@deploy/local/kafka.sh fetch

infra: deps
	@deploy/local/infra.sh up

run: deps
	@deploy/local/run.sh

up: deps
	@deploy/local/up.sh up

down:
	@deploy/local/up.sh down

# The same on a three-node Kafka cluster (KRaft, a quorum of three, topics on three
# replicas with min.insync.replicas=2); `make down` stops it.
cluster: deps
	@HOOKLINE_KAFKA_NODES=3 deploy/local/up.sh up

# The console's browser tests drive Debian's headless Chromium through chromium-driver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -q && apt-get install -y -q chromium chromium-driver)

# Helm, for the chart's test (tests/unit/test_deploy_helm.py): a Go module, built once into
# .hookline/bin through the Go module proxy. Debian's golang-go is older than helm needs;
# GOTOOLCHAIN=auto fetches the Go release helm's go.mod asks for, from the same proxy.
HELM_VERSION := v3.22.0
HELM := .hookline/bin/helm
$(HELM):
	@command -v go >/dev/null || (apt-get update -q && apt-get install -y -q golang-go)
	@mkdir -p .hookline/bin
	GOBIN=$(CURDIR)/.hookline/bin GOTOOLCHAIN=auto go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

helm: $(HELM)

# promtool, for the alert rules' test (tests/unit/test_observability.py): Debian's
# prometheus package (the server is installed beside it, not started).
promtool:
	@command -v promtool >/dev/null || (apt-get update -q && \
	  apt-get install -y -q --no-install-recommends prometheus)

test: deps browser helm promtool
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

# PNGs of the console's main pages, from a seeded demo org, into .hookline/screenshots/.
screenshots: deps browser
	$(PY) -m tests.browser.screenshots

unit: $(VENV_STAMP) promtool
	$(PY) -m pytest -q tests/unit

lint: $(VENV_STAMP)
	$(PY) -m ruff check services shared tests
	$(PY) -m mypy services shared tests

# Options through BENCH_ARGS, e.g. the opt-in phases:
#   make bench BENCH_ARGS=--phases=ceiling,config_scale
# wrk (Debian's package) drives the saturating loads: a C client, so that the figure is
# the server's and not the driver's (see tests/bench/wrk.py).
bench: deps
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) -m tests.bench $(BENCH_ARGS)

receiver: $(VENV_STAMP)
	$(PY) -m services.receiver

clean: down
	rm -rf .hookline
