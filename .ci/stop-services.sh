#!/usr/bin/env bash
# Stop what .ci/start-*.sh started, by recorded PID (reverse order), never by name.
for f in /tmp/slurm/pids /tmp/harness-pg/pids; do
  [ -f "$f" ] || continue
  for pid in $(tac "$f"); do kill -TERM "$pid" 2>/dev/null || true; done
  rm -f "$f"
done
[ -d /tmp/harness-pg/data ] && runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl -D /tmp/harness-pg/data stop -m fast >/dev/null 2>&1 || true
exit 0
