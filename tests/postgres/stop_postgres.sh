#!/usr/bin/env bash
# Stops the server tests/postgres/start_postgres.sh started (its own data folder), and nothing else.
set -uo pipefail

if [ "$(id -u)" = 0 ]; then STATE=${BENCH_POSTGRES_STATE:-/var/lib/bench-postgres}; else STATE=${BENCH_POSTGRES_STATE:-/tmp/bench-postgres-$(id -un)}; fi
[ -s "$STATE/data/postmaster.pid" ] || exit 0
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- "$BIN/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null
else
  "$BIN/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null
fi
echo "stop_postgres: stopped the server of $STATE" >&2
