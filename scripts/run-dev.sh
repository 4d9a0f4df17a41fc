#!/usr/bin/env bash
# `make run`: the portal on the embedded default — SQLite, the SmartPages sandbox when no credentials are
# set, a real Celery worker with beat on kombu's filesystem transport — at http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DEBUG="${DEBUG:-1}"
# A sender that reads as one in the outbox, rather than Django's webmaster@localhost.
export DEFAULT_FROM_EMAIL="${DEFAULT_FROM_EMAIL:-SmartPass Portal (demo) <passes@demo.example>}"
mkdir -p var/celery/queue var/celery/processed var/cache var/media var/outbox

pids=()
# Ctrl-C stops everything within seconds: the worker's warm shutdown would wait for a sending run or a sync to
# end its slice; killed, its recorded work is taken over by the sweep at the next start.
cleanup() {
  trap - EXIT INT TERM  # once: an INT or TERM is followed by EXIT, and reaped PIDs may be reused
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for pid in "${pids[@]}"; do pkill -KILL -P "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
# Ctrl-C during the start-up steps ends the script too, rather than going on to runserver alone.
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

if [ -z "${SMARTPAGES_KEY_ID:-}" ]; then
  export SMARTPAGES_API_URL="http://127.0.0.1:8001" SMARTPAGES_KEY_ID="sandbox" SMARTPAGES_KEY_TOKEN="sandbox-secret"
  # Its passes are kept in var/ so that members issued in the demo can still be refreshed after a restart.
  $PY manage.py smartpages_sandbox --port 8001 --templates 25 --passes-file var/sandbox-passes.jsonl > var/sandbox.log 2>&1 &
  pids+=($!)
  echo "SmartPages sandbox (not the real service) on $SMARTPAGES_API_URL — log in var/sandbox.log"
fi

$PY manage.py migrate --no-input -v 0
$PY manage.py collectstatic --no-input -v 0
echo "Demo logins (new passwords on every start):"
$PY manage.py demo_users

$PY -m celery -A portal worker --beat --loglevel=INFO --concurrency=2 \
  --schedule var/celerybeat-schedule > var/worker.log 2>&1 &
pids+=($!)
echo "Celery worker + beat (embedded broker in var/celery) — log in var/worker.log"

# Wait for the sandbox, then fill the mirror once so the first page is not empty.
for _ in $(seq 50); do $PY -c "import socket,sys; socket.create_connection(('127.0.0.1', 8001), 0.2)" 2>/dev/null && break; sleep 0.2; done
$PY manage.py sync_templates || echo "First sync failed; see the Templates page and var/worker.log."

[ -z "${EMAIL_URL:-}${ANYMAIL_BACKEND:-}" ] && echo "Email goes to the local outbox (var/outbox/, Delivery → Outbox), not to anyone."
[ -z "${SMS_URL:-}" ] && echo "SMS goes to the local outbox too."
echo "Portal on http://127.0.0.1:8000 — Ctrl-C stops everything."
$PY manage.py runserver 127.0.0.1:8000
