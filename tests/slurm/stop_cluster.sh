#!/usr/bin/env bash
# Stops what tests/slurm/start_cluster.sh started (by the daemons' pid files), and nothing else.
set -uo pipefail

STATE=${BENCH_SLURM_STATE:-/var/lib/bench-slurm}

stop() {  # stop NAME PIDFILE
  local pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid"
  for _ in $(seq 1 80); do
    kill -0 "$pid" 2>/dev/null || { echo "stop_cluster: stopped $1" >&2; return 0; }
    sleep 0.25
  done
  echo "stop_cluster: $1 (pid $pid) did not stop within 20 s; killing it" >&2
  kill -9 "$pid" 2>/dev/null
}

[ -d "$STATE" ] || exit 0
stop slurmd "$STATE/slurmd.pid"
stop slurmctld "$STATE/slurmctld.pid"
stop slurmdbd "$STATE/slurmdbd.pid"
stop mariadb "$STATE/mariadb/mariadb.pid"
# munged is shared by anything that authenticates with munge on this machine; it is stopped only where
# this script's cluster is the only SLURM config (the marker the start script writes).
if grep -qF "# written by bench tests/slurm/start_cluster.sh" /etc/slurm/slurm.conf 2>/dev/null; then
  stop munged /run/munge/munged.pid
fi
exit 0
