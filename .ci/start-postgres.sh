#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the registry tests.
#
#   eval "export $(.ci/start-postgres.sh)"     # then: pytest tests/test_registry.py
#
# Installs PostgreSQL with apt when it is missing (Debian/Ubuntu), creates a cluster in a
# fresh directory under /tmp owned by the postgres user (or the current user when not
# root), listening on 127.0.0.1 only, on a free port, with trust auth (loopback only, a
# throwaway), creates database harness_test and prints one line on stdout:
#
#   HARNESS_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:PORT/harness_test
#
# (also appended to $GITHUB_ENV when that is set). Everything else goes to stderr,
# including the command that stops the cluster.
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

find_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ] || [ ! -x "$BINDIR/initdb" ]; then
  log "installing postgresql with apt"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
  BINDIR="$(find_bindir)"
fi
[ -x "$BINDIR/initdb" ] || { log "no initdb found under /usr/lib/postgresql/*/bin"; exit 1; }

# The cluster runs as 'postgres' when we are root (initdb refuses root), else as us.
if [ "$(id -u)" -eq 0 ]; then
  RUN_AS=(runuser -u postgres --)
  DBUSER=postgres
else
  RUN_AS=()
  DBUSER="$(id -un)"
fi

free_port() {
  python3 - <<'PY' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 ))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

PGDIR="$(mktemp -d /tmp/harness-pg.XXXXXX)"
chmod 755 "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$PGDIR"
PORT="${HARNESS_PG_PORT:-$(free_port)}"

log "initdb in $PGDIR/data (bin: $BINDIR)"
"${RUN_AS[@]}" "$BINDIR/initdb" -D "$PGDIR/data" -U "$DBUSER" --auth=trust -E UTF8 --locale=C >"$PGDIR/initdb.log" 2>&1 \
  || { cat "$PGDIR/initdb.log" >&2; exit 1; }

log "starting on 127.0.0.1:$PORT"
"${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c fsync=off -c max_connections=100" start >&2 \
  || { cat "$PGDIR/server.log" >&2; exit 1; }

"${RUN_AS[@]}" "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U "$DBUSER" harness_test >&2

URL="postgresql+psycopg://${DBUSER}@127.0.0.1:${PORT}/harness_test"
log "stop it with: ${RUN_AS[*]} $BINDIR/pg_ctl -D $PGDIR/data stop -m fast && rm -rf $PGDIR"
if [ -n "${GITHUB_ENV:-}" ]; then echo "HARNESS_TEST_PG_URL=$URL" >>"$GITHUB_ENV"; fi
echo "HARNESS_TEST_PG_URL=$URL"
