# One image for the web server and the worker.
FROM python:3.12-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
# bubblewrap: the local sandbox provider (production normally sets E2B_API_KEY instead,
# since container platforms rarely allow the user namespaces bubblewrap needs).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/* && pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock .python-version ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN useradd --create-home --uid 1000 harness \
    && mkdir -p /app/var && chown -R harness /app/var \
    && DEBUG=true HARNESS_IGNORE_ENV_FILE=1 uv run --no-dev python manage.py collectstatic --noinput
USER harness
ENV HOST=0.0.0.0 PORT=8000 HARNESS_IGNORE_ENV_FILE=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/health')"
CMD ["uv", "run", "--no-dev", "python", "manage.py", "runharness"]
