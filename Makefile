# The registry's two everyday commands (see README.md):
#   make run    set up, migrate, load demo data and serve the console and API (SQLite)
#   make test   set up and run the whole test suite (PostgreSQL too: set REGISTRY_TEST_DATABASE_URL)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
BIND ?= 127.0.0.1:8000

.PHONY: install run test bench bench-load load-generator openapi site-tools clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[server,test]"
	touch $@

# The console's front-end assets, from the npm registry at build time, served from the package
# (never a CDN): the plotting library, the spreadsheet reader of the upload page, and axe-core for
# the accessibility check of the tests.
VENDOR := registry/web/static/vendor
VENDOR_FILES := node_modules/@observablehq/plot/dist/plot.umd.min.js \
	node_modules/d3/dist/d3.min.js node_modules/axe-core/axe.min.js \
	node_modules/read-excel-file/bundle/read-excel-file.min.js

$(VENDOR)/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the console's assets (apt-get install npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp $(VENDOR_FILES) $(VENDOR)/
	touch $@

install: $(VENV)/.installed $(VENDOR)/.installed

# make run: each step on its own line, so that a step can be added (e.g. cutting a release).
# Request logs are off (REGISTRY_LOG_LEVEL=WARNING) so that the tokens stay on the screen.
DEMO_TOKENS ?= instance/demo-tokens.env
run: install
	@$(BIN)/registry db upgrade
	@$(BIN)/registry demo-data --tokens $(DEMO_TOKENS)
	@cut=$$(REGISTRY_RELEASE_MIN_DAYS=0 $(BIN)/registry releases cut --note "demo data") \
	  && echo "$$cut" | head -n 1 \
	  || echo "(no new release this time, for the reason above: the last one still answers)"
	@echo
	@echo "In another terminal, in this folder:   . $(DEMO_TOKENS)"
	@echo "The console: http://$(BIND)/   (sign in with COORDINATOR_TOKEN above)"
	@echo "API documentation: http://$(BIND)/docs/   (stop with Ctrl-C)"
	@REGISTRY_BIND=$(BIND) REGISTRY_LOG_LEVEL=$${REGISTRY_LOG_LEVEL:-WARNING} \
	  $(BIN)/gunicorn --config deploy/gunicorn.conf.py "registry:create_app()"

test: install
	$(BIN)/python -m pytest

bench: install load-generator
	$(BIN)/python -m benchmarks

# B3 and B6 alone (gunicorn under load from wrk), on PostgreSQL and SQLite
bench-load: install load-generator
	$(BIN)/python -m benchmarks.load

# wrk, B3's load generator, and pgbench, its baseline (Debian packages)
load-generator:
	@command -v wrk >/dev/null || { echo "installing the load generator wrk"; \
	  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; }
	@command -v pgbench >/dev/null || { echo "installing pgbench (postgresql-client)"; \
	  apt-get install -y -qq postgresql-client >/dev/null || { apt-get update -qq && \
	  apt-get install -y -qq postgresql-client; }; }

openapi: install
	$(BIN)/registry openapi write openapi.yaml

# The site tools as one wheel file to hand to a site (the package is not on PyPI): the same
# distribution as the server's, which a site installs without the [server] extra.
site-tools: install
	rm -rf dist && $(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/*.whl

clean:
	rm -rf $(VENV) instance .pytest_cache node_modules $(VENDOR) screenshots dist build
