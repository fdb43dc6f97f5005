#!/usr/bin/env bash
# Install (Debian packages) and start the services the test suite needs: PostgreSQL and
# Redis on loopback, Chromium for the browser test, and GNU gettext for the translations test. Idempotent; run as root. Prints the environment to export.
set -euo pipefail
# Only the environment goes to stdout (callers eval it). The work runs with stdout sent to
# stderr, so no daemon it starts (PostgreSQL, Redis, or one a package's postinst starts) can
# inherit the caller's `$(...)` pipe: a daemon holding it would keep `eval "$(...)"` waiting
# forever, which is how a CI run once hung for its whole 90 minutes.
start_services() {
  need=()
  command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # The browser test: Debian's Chromium (Playwright drives it; no browser download).
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # The load benchmark's short mode: wrk drives gunicorn on loopback.
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  # The translations test: makemessages extracts with GNU gettext's xgettext.
  command -v xgettext >/dev/null 2>&1 || need+=(gettext)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi

  # PostgreSQL: the first cluster Debian created, started, with a known password on TCP.
  read -r pg_version pg_cluster _ < <(pg_lsclusters --no-header | head -n 1)
  pg_ctlcluster "$pg_version" "$pg_cluster" start 2>/dev/null || true
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -q && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 || { echo "PostgreSQL did not start" >&2; exit 1; }
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null

  # Redis: no persistence, loopback only.
  if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
    for _ in $(seq 1 30); do
      redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  redis-cli -h 127.0.0.1 ping >/dev/null || { echo "Redis did not start" >&2; exit 1; }
}
start_services >&2

cat <<ENV
export TEST_DATABASE=postgres PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres PGPASSWORD=postgres
export REDIS_URL=redis://127.0.0.1:6379/15
ENV
