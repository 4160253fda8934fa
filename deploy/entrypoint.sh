#!/usr/bin/env bash
# GridWatch process entry point: one image (or one install), one role per process.
#
#   entrypoint.sh web          gunicorn serving 'gridwatch.web:create_app()'
#   entrypoint.sh worker       a Celery worker consuming $WORKER_QUEUES
#   entrypoint.sh beat         the beat scheduler (run exactly one in the whole installation)
#   entrypoint.sh migrate      create or migrate the database schema, then exit
#   entrypoint.sh healthcheck web|worker   exit 0 when this container's process is healthy
#   entrypoint.sh gridwatch …  (or any other command) run it as it is, e.g. `gridwatch users add`
#
# GridWatch itself reads only GRIDWATCH_* settings (see .env.example). These variables shape
# the processes and are read here only:
#   WEB_BIND            address:port gunicorn listens on            (default 0.0.0.0:8000)
#   WEB_CONCURRENCY     gunicorn worker processes                   (default 4)
#   WEB_TIMEOUT         seconds a request may take (large imports)  (default 300)
#   WORKER_QUEUES       queues a worker consumes                    (default gridwatch.quick,gridwatch.heavy)
#   WORKER_CONCURRENCY  task processes per worker                   (default 2)
#   WORKER_NAME         Celery node name, %h = host name            (default worker@%h)
#   LOG_LEVEL           DEBUG, INFO, WARNING …                      (default INFO)
set -euo pipefail

role="${1:-web}"
if [ "$#" -gt 0 ]; then shift; fi

say() { printf 'gridwatch: %s\n' "$*" >&2; }

# Read the settings once up front, so a bad value stops the process with the one sentence
# gridwatch.config wrote for it instead of a traceback from deep inside gunicorn or Celery.
check_settings() {
    python - <<'PY'
import sys

from gridwatch.config import ConfigError, load_settings

try:
    load_settings()
except ConfigError as exc:
    print(f"gridwatch: {exc}", file=sys.stderr)
    sys.exit(2)
PY
}

need_redis() {
    if [ -z "${GRIDWATCH_REDIS_URL:-}" ]; then
        say "GRIDWATCH_REDIS_URL is not set: the $role process needs Redis (without it, tasks run inside the web process and no worker or beat is needed)"
        exit 2
    fi
}

worker_name() {
    local name="${WORKER_NAME:-worker@%h}"
    printf '%s' "${name//%h/$(uname -n)}"
}

case "$role" in
    web)
        check_settings
        if [ -z "${GRIDWATCH_SECRET_KEY:-}" ]; then
            # Each gunicorn process would draw its own random key: a sign-in made by one
            # process would be refused by the next.
            say "GRIDWATCH_SECRET_KEY is not set: web processes must share one key (generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            exit 2
        fi
        exec gunicorn \
            --config python:gridwatch.web.gunicorn_conf \
            --bind "${WEB_BIND:-0.0.0.0:8000}" \
            --workers "${WEB_CONCURRENCY:-4}" \
            --timeout "${WEB_TIMEOUT:-300}" \
            --graceful-timeout 30 \
            --log-level "$(printf '%s' "${LOG_LEVEL:-INFO}" | tr '[:upper:]' '[:lower:]')" \
            --access-logfile - \
            --error-logfile - \
            "$@" \
            'gridwatch.web:create_app()'
        ;;
    worker)
        check_settings
        need_redis
        # --include: the survey results' warm-up task and its publish hook (targeting layer)
        exec celery --app gridwatch.workers.celery_app worker \
            --include gridwatch.targeting.survey_results \
            --queues "${WORKER_QUEUES:-gridwatch.quick,gridwatch.heavy}" \
            --concurrency "${WORKER_CONCURRENCY:-2}" \
            --hostname "${WORKER_NAME:-worker@%h}" \
            --loglevel "${LOG_LEVEL:-INFO}" \
            "$@"
        ;;
    beat)
        check_settings
        need_redis
        exec gridwatch beat --loglevel "${LOG_LEVEL:-INFO}" "$@"
        ;;
    migrate)
        check_settings
        exec gridwatch db upgrade "$@"
        ;;
    healthcheck)
        case "${1:-}" in
            web)
                # Liveness only: /readyz would restart a healthy web process whenever the
                # database is away. The proxy and monitoring look at /readyz.
                port="${WEB_BIND:-0.0.0.0:8000}"
                port="${port##*:}"
                exec python - "http://127.0.0.1:${port}/healthz" <<'PY'
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        healthy = response.status == 200
except OSError as exc:
    sys.exit(f"gridwatch: {sys.argv[1]} does not answer: {exc}")
sys.exit(0 if healthy else 1)
PY
                ;;
            worker)
                exec celery --app gridwatch.workers.celery_app inspect ping \
                    --destination "$(worker_name)" --timeout 10
                ;;
            *)
                say "healthcheck needs a role: web or worker"
                exit 2
                ;;
        esac
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
