#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + munged), no systemd, no cgroups.
# Daemons run under setsid with their PIDs in /tmp/slurm/pids; .ci/stop-services.sh stops them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rm -rf /tmp/slurm && mkdir -p /tmp/slurm/{state,spool,log}
sed "s/@HOST@/$(hostname -s)/g" "$here/slurm.conf.in" > /etc/slurm/slurm.conf
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
setsid runuser -u munge -- /usr/sbin/munged -F >/tmp/slurm/log/munged.out 2>&1 </dev/null & echo "$!" >>/tmp/slurm/pids
for _ in $(seq 100); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
setsid /usr/sbin/slurmctld -D -i >/tmp/slurm/log/slurmctld.out 2>&1 </dev/null & echo "$!" >>/tmp/slurm/pids
setsid /usr/sbin/slurmd -D >/tmp/slurm/log/slurmd.out 2>&1 </dev/null & echo "$!" >>/tmp/slurm/pids
for _ in $(seq 300); do [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] && break; sleep 0.1; done
sinfo -h -N -o %t | grep -q idle || { echo "slurm did not come up; see /tmp/slurm/log" >&2; exit 1; }
echo "slurm up: $(sinfo -h -o '%P %a %D %t')" >&2
