# syntax=docker/dockerfile:1
# otlp-gateway: one image, one process per role (see deploy/entrypoint.sh):
#   docker run IMAGE http | grpc | migrate | all-in-one
# Build:  docker build -t otlp-gateway .
#         docker build --build-arg EMBEDDED_CHDB=false -t otlp-gateway:server-only .  (no chDB, ~0.5 GB smaller;
#         then only a ClickHouse server URL works)
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: dependencies into a virtualenv (every dependency ships wheels; no compiler needed) ---
FROM ${PYTHON_IMAGE} AS build
ARG EMBEDDED_CHDB=true
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Only the project metadata: this layer is rebuilt when dependencies change, not the code.
COPY pyproject.toml README.md ./
RUN pip install --upgrade pip \
    && pip install ".[production]" \
    && pip uninstall --yes otlp-gateway \
    && if [ "$EMBEDDED_CHDB" != "true" ]; then pip uninstall --yes chdb chdb-core; fi

# --- runtime: the virtualenv and the code, as an unprivileged user ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="otlp-gateway" \
      org.opencontainers.image.description="Multi-tenant OTLP ingestion gateway (OTLP/gRPC, OTLP/HTTP) into ClickHouse"
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY manage.py ./
COPY deploy ./deploy
COPY gateway ./gateway
COPY tenants ./tenants
COPY billing ./billing
COPY storage ./storage
COPY vocabulary ./vocabulary
# Byte-compiled now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app \
    && chmod 0755 /app/deploy/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    DJANGO_SETTINGS_MODULE=gateway.settings_production \
    GATEWAY_DATA_DIR=/tmp/otlp-gateway
# 4317 OTLP/gRPC, 4318 OTLP/HTTP + console + API, 9464 the gRPC process's /metrics
EXPOSE 4317 4318 9464
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["http"]
