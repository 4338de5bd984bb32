# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
UV = $(PYTHON) -m uv
PORT ?= 8000
PHOENIX_PORT ?= 6006
PHOENIX_GRPC_PORT ?= 4317

.PHONY: install run test test-postgres lint format uv system-deps sandbox-deps phoenix

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv

install: uv
	$(UV) sync --frozen

.env:
	cp .env.example .env
	@echo "Created .env from .env.example (edit it to add keys)."

run: install .env sandbox-deps
	$(UV) run python manage.py migrate --noinput
	$(UV) run python manage.py ensureadmin
	$(UV) run python manage.py runharness --port $(PORT)

test: install system-deps sandbox-deps
	$(UV) run pytest

test-postgres: install system-deps sandbox-deps
	DATABASE_URL=$${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/harness} $(UV) run pytest

# A local Phoenix (offline, loopback only, data in var/phoenix) to receive the harness's traces:
# then run the harness with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$(PHOENIX_PORT).
phoenix: install
	mkdir -p var/phoenix
	PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$(PHOENIX_PORT) PHOENIX_GRPC_PORT=$(PHOENIX_GRPC_PORT) \
	  PHOENIX_WORKING_DIR=$(CURDIR)/var/phoenix PHOENIX_TELEMETRY_ENABLED=false \
	  PHOENIX_ALLOW_EXTERNAL_RESOURCES=false $(UV) run phoenix serve

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy .

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

# Debian packages the test suite uses: chromium (admin browser tests). Installing needs root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (the admin browser tests need it)"; fi; }

# bubblewrap (bwrap) confines the local sandbox provider; without it (and without
# E2B_API_KEY) the coder agent's runs fail with a clear error. Installing needs root.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "bubblewrap is missing: sudo apt-get install bubblewrap (the local sandbox needs it)"; fi; }
