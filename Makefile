# One entry point for people and CI. `make setup` is idempotent: it only reinstalls when
# pyproject.toml or the C decoder changed since the last install (the stamp file records that;
# the install compiles detector/core/_speedups.c in place).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup integrations-deps test test-faults demo demo-alertmanager bench report-screenshot clean

setup: $(STAMP)

$(STAMP): pyproject.toml detector/core/_speedups.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's Prometheus (with promtool) and Alertmanager, which the integration tests run for real,
# and Debian's Chromium, which renders the HTML report.
# Installs only when a binary is missing (CI: a fresh machine, as root), so it is instant after.
INTEGRATION_BINS := prometheus promtool prometheus-alertmanager amtool
integrations-deps:
	@missing=""; for bin in $(INTEGRATION_BINS); do \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$bin"; done; \
	if [ -n "$$missing" ]; then \
	  echo "integrations-deps: installing prometheus prometheus-alertmanager (missing:$$missing)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus prometheus-alertmanager >/dev/null; } || \
	  { echo "integrations-deps: apt-get install prometheus prometheus-alertmanager failed (needs root)" >&2; exit 1; }; \
	fi
	@# Debian's Chromium, headless, renders the HTML report in tests/test_report.py.
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "integrations-deps: installing chromium (/usr/bin/chromium missing)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; } || \
	  { echo "integrations-deps: apt-get install chromium failed (needs root)" >&2; exit 1; }; \
	fi

# One test process per core (pytest-xdist): the broker tests spend most of their time waiting.
test: setup integrations-deps
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -n auto -m "not faults"

# Fault injection against the broker (crashes, member moves, outages, refused writes): minutes.
test-faults: setup
	$(BIN)/python -m pytest -q -m faults

# `make demo ALERTMANAGER_URL=http://host:9093` also runs the notifier and shows the alert firing
# in that Alertmanager, then resolved (as does DETECTOR_NOTIFY_ALERTMANAGER_URLS in the environment).
ALERTMANAGER_URL ?=
demo: setup
	$(BIN)/python -m detector.demo $(if $(ALERTMANAGER_URL),--alertmanager-url '$(ALERTMANAGER_URL)')

# The same against Debian's Alertmanager started on loopback (installed with apt-get, as root, when
# missing). HOLD=SECONDS keeps the alert firing that long, to look at it with amtool.
HOLD ?= 0
demo-alertmanager: setup
	@command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 || { \
	  echo "demo-alertmanager: installing prometheus-alertmanager (missing)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus-alertmanager >/dev/null; } || \
	  { echo "demo-alertmanager: apt-get install prometheus-alertmanager failed (needs root)" >&2; exit 1; }; }
	$(BIN)/python -m detector.demo --with-alertmanager --hold-firing $(HOLD)

bench: setup
	$(BIN)/detector bench

# The README's report screenshot: the seed incident (3.5 h, seed 1) replayed with --report and
# shot by headless Chromium, written to docs/report-screenshot.png.
REPORT_OUT := report-out
report-screenshot: setup integrations-deps
	rm -rf $(REPORT_OUT) && mkdir -p $(REPORT_OUT) docs
	$(BIN)/detector generate seed-incident $(REPORT_OUT)/data --seed 1 --hours 3.5
	$(BIN)/detector replay --mail $(REPORT_OUT)/data/mail.jsonl.gz --dns $(REPORT_OUT)/data/dns.jsonl.gz \
	  --out $(REPORT_OUT)/anomalies.jsonl --series $(REPORT_OUT)/series.jsonl --report $(REPORT_OUT)/report.html
	/usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$(REPORT_OUT)/profile --virtual-time-budget=5000 --window-size=1400,1800 \
	  --screenshot=$(CURDIR)/docs/report-screenshot.png file://$(CURDIR)/$(REPORT_OUT)/report.html 2>/dev/null

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out $(REPORT_OUT)
