#!/bin/sh
# The container's entrypoint: one image, one process per role.
#   http        gunicorn: OTLP/HTTP (4318), console, API, /healthz, /readyz, /metrics
#   grpc        OTLP/gRPC (4317) with the gRPC health service, /metrics on GATEWAY_METRICS_PORT
#   migrate     deploy checks, database migrations, ClickHouse migrations (the Helm hook Job)
#   all-in-one  manage.py serve: everything in one process on the embedded defaults
#   anything else runs as a command, e.g. `manage.py create_tenant Acme`
set -eu
cd "${GATEWAY_APP_DIR:-$(dirname "$0")/..}"
PYTHON="${PYTHON:-python}"
role="${1:-http}"
[ "$#" -gt 0 ] && shift
case "$role" in
    http) exec "$PYTHON" manage.py serve_http "$@" ;;
    grpc) exec "$PYTHON" manage.py serve_grpc "$@" ;;
    migrate)
        "$PYTHON" manage.py check --deploy
        "$PYTHON" manage.py migrate --noinput
        exec "$PYTHON" manage.py migrate_clickhouse
        ;;
    all-in-one)
        # Evaluation on the embedded defaults (SQLite, chDB) in $GATEWAY_DATA_DIR; mount a volume there to keep data.
        export DJANGO_SETTINGS_MODULE=gateway.settings
        exec "$PYTHON" manage.py serve "$@"
        ;;
    manage.py) exec "$PYTHON" manage.py "$@" ;;
    *) exec "$role" "$@" ;;
esac
