# One image for the web server and the worker: `manage.py runharness` runs both; run
# `runharness --no-worker` and `runharness --no-web` as separate containers to scale them apart.
#
# PYTHON_BASE is python:3.12-slim from Docker Hub. `make image` builds this file with buildah
# and, when that registry cannot be reached, passes a local stand-in of the same shape instead
# (Debian bookworm minbase + CPython 3.12 in /usr/local; see the Makefile's `image-standin-base`).
ARG PYTHON_BASE=docker.io/library/python:3.12-slim

# --- builder: uv and the locked dependencies (from PyPI) into /app/.venv --------------------
FROM ${PYTHON_BASE} AS builder
ARG UV_VERSION=0.13.9
# UV_NATIVE_TLS / PIP_CERT: trust the image's CA store (ca-certificates), not a bundled one.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock .python-version ./
RUN uv sync --frozen --no-dev --no-install-project --no-cache --python /usr/local/bin/python3.12

# --- runtime: the venv, the app and bubblewrap; no uv, no compiler -------------------------
FROM ${PYTHON_BASE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/app/.venv/bin:$PATH \
    HOST=0.0.0.0 PORT=8000 HARNESS_IGNORE_ENV_FILE=1
# bubblewrap: the local sandbox provider (production normally sets E2B_API_KEY instead, since
# container platforms rarely allow the user namespaces bubblewrap needs). Unpinned on purpose:
# Debian security updates replace the version in the archive.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 harness \
    && useradd --create-home --uid 1000 --gid 1000 harness
WORKDIR /app
# The venv first: it changes with uv.lock only, so a change to the code rebuilds the layers below.
COPY --from=builder /app/.venv /app/.venv
COPY . .
RUN DEBUG=true HARNESS_IGNORE_ENV_FILE=1 HARNESS_VAR_DIR=/app/var python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R 1000:1000 /app/var
# harness (numeric, so that platforms checking runAsNonRoot can tell it is not root)
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=4)"]
CMD ["python", "manage.py", "runharness"]
