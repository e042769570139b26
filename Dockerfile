# syntax=docker/dockerfile:1
# Build stage: a wheel with its dependencies in a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/switchboard
COPY pyproject.toml README.md ./
COPY service ./service
COPY migrations ./migrations
RUN /opt/switchboard/bin/pip install --upgrade pip && /opt/switchboard/bin/pip install .

# Runtime stage: the virtual environment only, run as an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SWITCHBOARD_DATABASE_URL=sqlite+aiosqlite:////data/switchboard.db \
    SWITCHBOARD_STORAGE_URL=file:///data/recordings \
    SWITCHBOARD_LOG_FORMAT=json
RUN useradd --system --uid 10001 --home-dir /data switchboard && mkdir -p /data && chown switchboard /data
COPY --from=build /opt/switchboard /opt/switchboard
USER switchboard
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
# Migrations first (safe to run on every start, on SQLite and PostgreSQL alike), then the service.
CMD ["sh", "-c", "switchboard migrate && exec switchboard serve --host 0.0.0.0 --port 8000"]
