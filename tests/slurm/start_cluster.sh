#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the tests of `bench run --launcher slurm`:
# munged, MariaDB + slurmdbd (so that sacct answers), slurmctld and slurmd, with a config written for
# this node's CPUs and memory (`slurmd -C`).  Idempotent: a cluster that already answers is left alone.
# Installs the Debian packages (slurm-wlm, slurmdbd, munge, mariadb-server) where they are missing.
# Needs root. Stop it with tests/slurm/stop_cluster.sh; state and logs stay in $BENCH_SLURM_STATE.
set -euo pipefail

STATE=${BENCH_SLURM_STATE:-/var/lib/bench-slurm}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARKER="# written by bench tests/slurm/start_cluster.sh"
DB_PORT=33306

say() { echo "start_cluster: $*" >&2; }
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local seconds=$1 description=$2
  shift 2
  for _ in $(seq 1 $((seconds * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  say "gave up waiting for $description after ${seconds}s; logs in $STATE"
  return 1
}
node_ready() { sinfo -h -N -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

if command -v sinfo >/dev/null && node_ready && sacct -n -X -S now >/dev/null 2>&1; then
  say "a SLURM cluster already answers (sinfo, sacct): left as it is"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "needs root (it installs packages, writes $CONF and starts daemons)"
  exit 1
fi

missing=()
for tool in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-wlm slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  say "installing $packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq $packages >/dev/null || { apt-get update -qq && apt-get install -y -qq $packages >/dev/null; }
fi

if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  say "$CONF exists and was not written by this script: this machine has its own SLURM; not touching it"
  exit 1
fi
mkdir -p "$STATE/ctld" "$STATE/d" /etc/slurm /var/log/slurm
host=$(hostname -s)

# munge: the packages create the key; the daemon runs as its own user.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  wait_until 20 munged sh -c 'munge -n | unmunge'
fi

# MariaDB for the accounting (sacct), in its own data folder and port: any other database is left alone.
if ! mariadb-admin --host=127.0.0.1 --port=$DB_PORT --user=slurm --password=bench ping >/dev/null 2>&1; then
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mkdir -p "$STATE/mysql" && chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket >"$STATE/mariadb-install.log" 2>&1
  fi
  mkdir -p "$STATE/mariadb" && chown mysql:mysql "$STATE/mariadb"  # socket, pid file and log: the server's own
  setsid nohup mariadbd --user=mysql --datadir="$STATE/mysql" --port=$DB_PORT --bind-address=127.0.0.1 \
    --socket="$STATE/mariadb/mysqld.sock" --pid-file="$STATE/mariadb/mariadb.pid" \
    --log-error="$STATE/mariadb/mariadb.log" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
  wait_until 60 MariaDB mariadb-admin --socket="$STATE/mariadb/mysqld.sock" ping
  mariadb --socket="$STATE/mariadb/mysqld.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'bench';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'bench';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
fi

# The node as slurmd sees it (CPUs, sockets, cores, memory), addressed on the loopback.
node_line=$(slurmd -C | head -n 1)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
cat >"$CONF" <<EOF
$MARKER: a one-node test cluster
ClusterName=bench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it starts again (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((memory / cpus))
# scancel: SIGKILL follows SIGTERM after KillWait seconds (submitit lets a task outlive SIGTERM).
KillWait=2
ReturnToService=2
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$DBD_CONF" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=bench
StorageLoc=slurm_acct_db
EOF
chmod 600 "$DBD_CONF"

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
pid_alive "$STATE/slurmdbd.pid" || slurmdbd
wait_until 60 slurmdbd sacctmgr -n list cluster
sacctmgr -n list cluster format=cluster | grep -qw bench || sacctmgr -i add cluster bench >/dev/null
pid_alive "$STATE/slurmctld.pid" || slurmctld
wait_until 60 slurmctld scontrol ping
pid_alive "$STATE/slurmd.pid" || slurmd
wait_until 60 "node $host to be idle" node_ready || {
  scontrol update nodename="$host" state=resume 2>/dev/null || true
  wait_until 30 "node $host to be idle" node_ready
}
wait_until 60 sacct sacct -n -X -S now
say "one-node cluster up: $cpus CPUs, ${memory} MB on $host (config $CONF, logs in $STATE)"
