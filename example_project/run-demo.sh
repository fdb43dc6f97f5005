#!/usr/bin/env bash
# Run the example project: migrate, start the TextFlow emulator and the dev server, print the
# URLs, and stop both on Ctrl-C (or SIGTERM). `make demo` calls this after installing .venv.
# The dev server stopping stops the demo; the emulator stopping does not: to the site that is
# TextFlow being down, which its pages explain, and the demo says how to start it again.
#
# Environment: PYTHON (default: .venv/bin/python of the repository), PORT (8000),
# EMULATOR_PORT (8025), DJANGO_DEBUG (on unless 0/false/no/off), DEMO_DATABASE (the SQLite
# file; default example_project/db.sqlite3). With TEXTFLOW_API_KEY set, no emulator is
# started and the project talks to TextFlow itself: real SMS, real credit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
port="${PORT:-8000}"
emulator_port="${EMULATOR_PORT:-8025}"
host=127.0.0.1
site="http://$host:$port"

# The example's settings, whatever the caller's shell has; output as it happens.
export DJANGO_SETTINGS_MODULE=demo.settings PYTHONUNBUFFERED=1
cd "$here"

pids=()
emulator_log=""
emulator_pid=""

stop_all() {
  # Ignore further Ctrl-C and TERM until done: an impatient second Ctrl-C must not cut the
  # cleanup short and leave a server running or the emulator's log behind.
  trap '' INT TERM
  trap - EXIT
  local pid
  for pid in "${pids[@]}"; do
    # Each child leads its own process group: this also stops runserver's reloader child.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  [ -n "$emulator_log" ] && rm -f "$emulator_log"
  if [ ${#pids[@]} -gt 0 ]; then
    echo "Demo stopped."
  fi
}
trap stop_all EXIT
# Ignoring at once, not only in stop_all: a second signal landing between this handler and
# stop_all's first line would otherwise run `exit` again in the middle of the cleanup.
trap "trap '' INT TERM; exit 130" INT
trap "trap '' INT TERM; exit 143" TERM

# Children get a process group (and session) of their own, so stopping one stops all its
# processes, and a terminal's Ctrl-C reaches only this script, which then stops them in order.
if command -v setsid >/dev/null 2>&1; then
  own_group=(setsid)
  reload=()
else
  # Without setsid, runserver's auto-reloader child could outlive its parent: no reloader.
  own_group=()
  reload=(--noreload)
fi

start() {
  ${own_group[@]+"${own_group[@]}"} "$@" </dev/null &
  pids+=("$!")
}

port_is_free() {
  "$python" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

if ! port_is_free "$port"; then
  echo "Port $port is in use: run with another, e.g. make demo PORT=8001" >&2
  exit 1
fi
if [ -z "${TEXTFLOW_API_KEY:-}" ] && ! port_is_free "$emulator_port"; then
  echo "Port $emulator_port is in use: run with another, e.g. make demo EMULATOR_PORT=8026" >&2
  exit 1
fi

echo "== Preparing the database (${DEMO_DATABASE:-$here/db.sqlite3})"
"$python" manage.py migrate --noinput --verbosity 0
"$python" manage.py demo_admin

emulator_command=("$python" -m textflow_django.testing --host "$host" --port "$emulator_port")
if [ -z "${TEXTFLOW_API_KEY:-}" ]; then
  export TEXTFLOW_EMULATOR_URL="http://$host:$emulator_port/api"
  # The emulator forwards a phone's replies (the dev inbox's "Reply as this number") to the
  # site's reply webhook with the demo's secret, as TextFlow forwards replies: both as the
  # URLs and the settings say (textflow:replies, TEXTFLOW["REPLY_SECRET"]).
  replies="$("$python" -c 'import django; django.setup()
from django.conf import settings; from django.urls import reverse
print(reverse("textflow:replies"), settings.TEXTFLOW["REPLY_SECRET"])')"
  emulator_command+=(--reply-url "$site${replies%% *}" --reply-secret "${replies#* }")
  emulator_log="$(mktemp)"
  start "${emulator_command[@]}" >"$emulator_log" 2>&1
  emulator_pid=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$emulator_log" && break
    if ! kill -0 "$emulator_pid" 2>/dev/null; then
      cat "$emulator_log" >&2
      echo "The TextFlow emulator did not start." >&2
      exit 1
    fi
    sleep 0.1
  done
  grep -q "listening on" "$emulator_log" || { echo "The emulator did not start in 10 s." >&2; exit 1; }
fi

start "$python" manage.py runserver ${reload[@]+"${reload[@]}"} "$host:$port"
server_pid=$!
ready=0
for _ in $(seq 1 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "The dev server did not start." >&2
    exit 1
  fi
  if "$python" -c "import urllib.request as u; u.urlopen('$site/', timeout=1)" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || { echo "The dev server did not answer in 30 s." >&2; exit 1; }

if "$python" -c "import drf_spectacular_sidecar" 2>/dev/null; then
  docs="$site/api/docs/"
else
  docs="$site/api/schema/ (the raw OpenAPI schema; install drf-spectacular-sidecar for docs)"
fi

cat <<BANNER

  textflow-django demo is running

  Site        $site/
BANNER
# Whether the dev inbox is served, as the settings decide it (DEBUG comes from DJANGO_DEBUG).
debug=$("$python" -c "from django.conf import settings; print(int(settings.DEBUG))")
if [ -z "${TEXTFLOW_API_KEY:-}" ]; then
  if [ "$debug" = 1 ]; then
    inbox="$site/dev/inbox/   (the SMS the emulator received, replies as their numbers, and TextFlow's fault switches)"
  else
    inbox="off: DEBUG is off (DJANGO_DEBUG=${DJANGO_DEBUG:-}); it exists only while DEBUG is on"
  fi
  cat <<BANNER
  Dev inbox   $inbox
  Emulator    $TEXTFLOW_EMULATOR_URL
BANNER
else
  echo "  TextFlow    the real service (TEXTFLOW_API_KEY is set): real SMS, real credit"
fi
cat <<BANNER
  API docs    $docs
  Bulk SMS    $site/staff/bulk/   (log in as admin / admin)

  Ctrl-C stops the dev server and the emulator.

BANNER

# Until Ctrl-C, or until the dev server stops on its own (then stop the emulator too). The
# emulator stopping is an outage of TextFlow to the site, which goes on serving and says so:
# the demo says it once and carries on.
while :; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "The dev server stopped; stopping the demo." >&2
    exit 1
  fi
  if [ -n "$emulator_pid" ] && ! kill -0 "$emulator_pid" 2>/dev/null; then
    emulator_pid=""
    echo "The TextFlow emulator stopped. The site keeps serving; its pages say TextFlow is" \
      "not answering. To start it again, in another terminal (from $here):" \
      "${emulator_command[*]}" >&2
  fi
  # A background sleep and `wait`: a signal interrupts `wait` at once.
  sleep 1 &
  wait $! || true
done
