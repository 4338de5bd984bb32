# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
UV = $(PYTHON) -m uv
PORT ?= 8000
PHOENIX_PORT ?= 6006
PHOENIX_GRPC_PORT ?= 4317

.PHONY: install run test test-postgres lint format uv system-deps sandbox-deps phoenix \
	image image-deps image-standin-base test-image screenshots

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv

# --compile-bytecode: the dependencies' .pyc files are written once, here. Where
# PYTHONDONTWRITEBYTECODE is set (many CI machines and shells) no process writes them, so each
# one compiled its imports again: ~2 s more per manage.py command and ~6 s more before a started
# harness's workers are ready. The image does the same with UV_COMPILE_BYTECODE (Dockerfile).
install: uv
	$(UV) sync --frozen --compile-bytecode

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

# The README's console screenshots (docs/console/), taken by the browser tests against the real
# harness. `make test` runs the same tests but keeps their screenshots out of the checkout.
screenshots: install system-deps sandbox-deps
	HARNESS_SCREENSHOTS=1 $(UV) run pytest tests/integration/test_console_run_page.py \
	  tests/integration/test_console_dashboard.py tests/integration/test_console_feedback_evals.py \
	  tests/integration/test_approvals_process.py

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
	$(UV) run hadolint Dockerfile

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

# Debian packages the test suite uses: chromium (admin browser tests), pgbouncer (the pooled
# database suite), redis-server (the outage and replica suites). Installing needs root.
system-deps:
	@{ command -v chromium && command -v pgbouncer && command -v redis-server; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium pgbouncer redis-server >/dev/null; \
	  else echo "chromium, pgbouncer or redis-server is missing: sudo apt-get install chromium pgbouncer redis-server (the test suite needs them)"; fi; }

# bubblewrap (bwrap) confines the local sandbox provider; without it (and without
# E2B_API_KEY) the coder agent's runs fail with a clear error. Installing needs root.
sandbox-deps:
	@{ command -v bwrap && command -v mkfs.ext4; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap e2fsprogs >/dev/null; \
	  else echo "bubblewrap or mkfs.ext4 is missing: sudo apt-get install bubblewrap e2fsprogs (the local sandbox needs them)"; fi; }

# --- The container image, built without a Docker engine (buildah) ---------------------------
# `make image` builds the Dockerfile into local storage as $(IMAGE). Its base is PYTHON_BASE
# (python:3.12-slim from Docker Hub); when that cannot be pulled, a local STAND-IN of the same
# shape is used (see image-standin-base). How to run it: README, "Deploying".
IMAGE ?= localhost/agent-harness:latest
PYTHON_BASE ?= docker.io/library/python:3.12-slim
STANDIN_BASE ?= localhost/agent-harness-python:3.12-slim-standin
# The CPython 3.12 copied into the stand-in (Debian bookworm ships 3.11): an installed prefix such
# as pyenv's /root/.pyenv/versions/3.12.x, found through the python3.12 on PATH.
STANDIN_PYTHON ?= $(shell python3.12 -c 'import sys; print(sys.base_prefix)' 2>/dev/null)
# Storage: overlay works here (root on a VM, /var/lib/containers/storage). Where overlay mounts are
# not allowed (inside an unprivileged container) try BUILDAH_STORAGE=vfs, which keeps its own store
# in /var/lib/containers/storage-vfs (a full copy per layer: cold 143 s and 3.1 GB here). chroot
# isolation needs no user namespaces or cgroups; RUN steps use the host's network.
BUILDAH_STORAGE ?= overlay
BUILDAH_ISOLATION ?= chroot
BUILDAH = buildah --storage-driver $(BUILDAH_STORAGE) \
	$(if $(filter-out overlay,$(BUILDAH_STORAGE)),--root /var/lib/containers/storage-$(BUILDAH_STORAGE))
# The host's CA store is bind-mounted over the build's during RUN steps, so the build reaches PyPI
# through whatever TLS-inspecting proxy the host trusts. Empty: the image's own store.
IMAGE_CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)

# buildah (builds and runs the image) and mmdebstrap (the stand-in base). Installing needs root.
image-deps:
	@{ command -v buildah && command -v mmdebstrap; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null; \
	  else echo "buildah/mmdebstrap are missing: sudo apt-get install buildah mmdebstrap (make image needs them)"; exit 1; fi; }

# A STAND-IN for python:3.12-slim, for hosts that cannot reach Docker Hub: Debian bookworm minbase
# (mmdebstrap, with debian:bookworm-slim's dpkg excludes) plus ca-certificates, netbase, tzdata
# and the libraries CPython's modules link to, plus the host's CPython 3.12 (STANDIN_PYTHON) copied
# to /usr/local without its site-packages, tests, IDLE or tkinter, and pip from its ensurepip.
# It is not the official image: same layout and Python minor version, not the same bits.
image-standin-base: image-deps
	@test -x "$(STANDIN_PYTHON)/bin/python3.12" || { echo "no CPython 3.12 found (set STANDIN_PYTHON=/prefix/of/python3.12)"; exit 1; }
	@echo "== building $(STANDIN_BASE): a LOCAL STAND-IN for python:3.12-slim (Debian bookworm minbase + CPython from $(STANDIN_PYTHON)) =="
	@set -eu; tmp=$$(mktemp -d); ctr=; \
	trap 'rm -rf "$$tmp"; [ -z "$$ctr" ] || $(BUILDAH) rm "$$ctr" >/dev/null' EXIT; \
	mmdebstrap --quiet --variant=minbase \
	  --include=ca-certificates,netbase,tzdata,libssl3,libsqlite3-0,libffi8,libbz2-1.0,liblzma5,zlib1g,libncursesw6,libreadline8,libuuid1,libnsl2 \
	  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
	  --dpkgopt='path-exclude=/usr/share/groff/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
	  --dpkgopt='path-exclude=/usr/share/locale/*' \
	  --customize-hook='tar -C "$(STANDIN_PYTHON)" -c --exclude=__pycache__ --exclude=lib/python3.12/test \
	    --exclude="lib/python3.12/site-packages/*" --exclude=lib/python3.12/idlelib --exclude=lib/python3.12/tkinter \
	    --exclude=lib/python3.12/turtledemo --exclude="lib/python3.12/config-3.12-*" --exclude="_tkinter.*" \
	    --exclude=lib/pkgconfig bin/python3.12 lib | tar -C "$$1/usr/local" -x --no-same-owner' \
	  --customize-hook='! command -v strip >/dev/null || strip --strip-unneeded "$$1"/usr/local/bin/python3.12 \
	    "$$1"/usr/local/lib/libpython3.12.so.1.0 "$$1"/usr/local/lib/python3.12/lib-dynload/*.so 2>/dev/null || true' \
	  --customize-hook='ln -s python3.12 "$$1/usr/local/bin/python3" && ln -s python3 "$$1/usr/local/bin/python" && chroot "$$1" ldconfig' \
	  --customize-hook='chroot "$$1" env -i PATH=/usr/local/bin:/usr/bin:/bin python3 -m ensurepip --default-pip >/dev/null' \
	  --customize-hook='chroot "$$1" python3 -c "import ssl, sqlite3, ctypes, lzma, bz2, zlib, hashlib, uuid, readline"' \
	  bookworm "$$tmp/rootfs.tar"; \
	ctr=$$($(BUILDAH) from scratch); \
	$(BUILDAH) add --quiet "$$ctr" "$$tmp/rootfs.tar" /; \
	$(BUILDAH) config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
	  --env LANG=C.UTF-8 --env PYTHON_VERSION="$$("$(STANDIN_PYTHON)/bin/python3.12" -c 'import platform; print(platform.python_version())')" \
	  --cmd python3 --label org.opencontainers.image.description="LOCAL STAND-IN for python:3.12-slim (mmdebstrap bookworm minbase + host CPython 3.12)" "$$ctr"; \
	$(BUILDAH) commit --quiet --rm "$$ctr" $(STANDIN_BASE) >/dev/null; ctr=; \
	echo "== $(STANDIN_BASE) ready (a stand-in, not the official python:3.12-slim) =="

image: image-deps
	@set -eu; base=$(PYTHON_BASE); started=$$(date +%s); \
	if ! $(BUILDAH) inspect --type image "$$base" >/dev/null 2>&1 && ! timeout 120 $(BUILDAH) pull --quiet "$$base" >/dev/null 2>&1; then \
	  echo "== $$base cannot be pulled here: building on $(STANDIN_BASE), a LOCAL STAND-IN for python:3.12-slim =="; \
	  $(BUILDAH) inspect --type image $(STANDIN_BASE) >/dev/null 2>&1 || $(MAKE) --no-print-directory image-standin-base; \
	  base=$(STANDIN_BASE); fi; \
	$(BUILDAH) build --quiet --layers --format docker --isolation $(BUILDAH_ISOLATION) --network host \
	  $(if $(IMAGE_CA_BUNDLE),--volume $(IMAGE_CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro) \
	  --build-arg PYTHON_BASE="$$base" --tag $(IMAGE) . >/dev/null; \
	echo "== $(IMAGE) built on $$base in $$(( $$(date +%s) - started ))s: $$($(BUILDAH) images --format '{{.Size}}' $(IMAGE)) =="

# The image test alone: it runs `make image` itself (warm, buildah's layer cache reuses every layer
# whose inputs did not change), then the web and the worker commands from the image.
test-image: install image-deps
	BUILDAH_STORAGE=$(BUILDAH_STORAGE) $(UV) run pytest -m slow_image tests/image
