#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the inventory tests and benchmarks.
#
#   tools/pg-cluster.sh start DIR   initdb into DIR/data, start a server that
#                                   listens on a Unix socket in DIR/sock only
#                                   (no TCP port), create database "escdr",
#                                   and print for eval:
#                                     export ESCDR_TEST_PG_URL='postgresql://...'
#   tools/pg-cluster.sh stop DIR    stop that server (and only that one)
#   tools/pg-cluster.sh crash DIR   stop it the way a crash would: every
#                                   session ends at once, no checkpoint
#                                   (pg_ctl -m immediate); for fault tests
#   tools/pg-cluster.sh restart DIR start that cluster's server again (after
#                                   stop or crash; a crash is recovered)
#   tools/pg-cluster.sh url DIR     print the URL again
#
# Typical use (tools/run-tests.sh):
#   eval "$(tools/pg-cluster.sh start "$dir")"; ...; tools/pg-cluster.sh stop "$dir"
#
# As root the server runs as the "postgres" user (initdb refuses root), and
# DIR is handed to that user. Needs Debian's postgresql package
# (tools/bootstrap.sh installs it). Logs: DIR/initdb.log, DIR/server.log.
set -euo pipefail

die() { echo "pg-cluster: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop|crash|restart|url DIR"

find_bin() {
  local d
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  done
  die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url_for() {
  local abs
  abs=$(cd "$1" && pwd)
  echo "postgresql://postgres@/escdr?host=$abs/sock"
}

# Starts the server of DIR/data: on the socket directory DIR/sock only.
start_server() {
  # fsync off: the data is thrown away, and tests run much faster. With
  # ESCDR_PG_DURABLE=1 a commit is on disk before it returns, as on a real
  # server: a test that crashes the server must not lose what it committed.
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ "${ESCDR_PG_DURABLE:-0}" = 1 ]; then durability=""; fi
  as_owner "$1/pg_ctl" -D "$2/data" -l "$2/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $2/sock $durability" \
    start >/dev/null || die "the server did not start; see $2/server.log"
}

case "$cmd" in
  start)
    bin=$(find_bin)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ ! -e "$dir/data" ] || die "$dir/data already exists; stop and remove that cluster first"
    # The socket path must fit in sun_path (108 bytes).
    [ ${#dir} -le 80 ] || die "directory $dir is too long for a Unix socket path"
    mkdir -p "$dir/sock"
    if [ "$(id -u)" -eq 0 ]; then
      id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as"
      chown -R postgres: "$dir"
      chmod 0755 "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
      >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
    start_server "$bin" "$dir"
    as_owner "$bin/psql" -X -q -h "$dir/sock" -U postgres -d postgres \
      -c "CREATE DATABASE escdr" >/dev/null || die "cannot create database escdr"
    echo "export ESCDR_TEST_PG_URL='$(url_for "$dir")'"
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/data/postmaster.pid" ]; then
      bin=$(find_bin)
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
  crash)
    [ -f "$dir/data/postmaster.pid" ] || die "no server of $dir is running"
    dir=$(cd "$dir" && pwd)
    as_owner "$(find_bin)/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null
    ;;
  restart)
    [ -d "$dir/data" ] || die "no cluster in $dir"
    [ ! -f "$dir/data/postmaster.pid" ] || die "the server of $dir is running; stop it first"
    dir=$(cd "$dir" && pwd)
    start_server "$(find_bin)" "$dir"
    ;;
  url)
    [ -d "$dir/data" ] || die "no cluster in $dir"
    echo "export ESCDR_TEST_PG_URL='$(url_for "$dir")'"
    ;;
  *)
    die "unknown command '$cmd' (expected start, stop, crash, restart or url)"
    ;;
esac
