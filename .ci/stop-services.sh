#!/usr/bin/env bash
# Stop what .ci/start-*.sh started, by recorded PID (reverse order), never by name.
for f in /tmp/slurm/pids; do
  [ -f "$f" ] || continue
  for pid in $(tac "$f"); do kill -TERM "$pid" 2>/dev/null || true; done
  rm -f "$f"
done
for d in /tmp/harness-pg.*/data; do
  [ -d "$d" ] && runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_ctl" -D "$d" stop -m fast >/dev/null 2>&1
done
exit 0
