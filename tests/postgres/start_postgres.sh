#!/usr/bin/env bash
# A PostgreSQL server for the tests of `bench tune --storage postgresql://...`: the Debian package
# (installed where missing, as root), a cluster of its own in $BENCH_POSTGRES_STATE on 127.0.0.1:$BENCH_POSTGRES_PORT,
# trust authentication for local connections.  Idempotent: a server already answering there is left alone.
# The tests connect to postgresql://postgres@127.0.0.1:$BENCH_POSTGRES_PORT/postgres.  Stop: stop_postgres.sh.
set -euo pipefail

PORT=${BENCH_POSTGRES_PORT:-55432}
if [ "$(id -u)" = 0 ]; then STATE=${BENCH_POSTGRES_STATE:-/var/lib/bench-postgres}; else STATE=${BENCH_POSTGRES_STATE:-/tmp/bench-postgres-$(id -un)}; fi
say() { echo "start_postgres: $*" >&2; }

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bin_dir)" ]; then
  if [ "$(id -u)" != 0 ]; then say "PostgreSQL is not installed and installing it needs root"; exit 1; fi
  say "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
fi
BIN=$(bin_dir)
if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  say "a server already answers on 127.0.0.1:$PORT: left as it is"
  exit 0
fi

# initdb and the server refuse to run as root: as root they run as the package's postgres user.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$STATE"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$STATE"
if [ ! -s "$STATE/data/PG_VERSION" ]; then
  as_owner "$BIN/initdb" -D "$STATE/data" -U postgres -A trust -E UTF8 >"$STATE/initdb.log" 2>&1
fi
as_owner "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/postgres.log" -w -t 60 \
  -o "-p $PORT -k $STATE -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 30
say "PostgreSQL up on 127.0.0.1:$PORT (data and log in $STATE)"
