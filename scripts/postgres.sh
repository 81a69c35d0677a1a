#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for tests (trust auth on loopback, fsync off).
#
#   scripts/postgres.sh [start] [DIR] [PORT]   start (or reuse) the cluster kept in DIR; the last
#                                              stdout line is postgresql://postgres@127.0.0.1:PORT/batch_agent
#   scripts/postgres.sh stop DIR               stop it (fast shutdown)
#   scripts/postgres.sh destroy DIR            stop it and delete its data
#
# DIR defaults to a new temporary directory; PORT to the cluster's previous port, else a free one.
# Idempotent: starting a running cluster only prints its URL. Without PostgreSQL binaries
# (/usr/lib/postgresql/*/bin, or $PG_BIN) it installs the Debian `postgresql` package with
# apt-get (root only), without creating or starting the distribution's own cluster.
# As root the server runs as the `postgres` user (initdb refuses root); when that user cannot
# reach DIR (say a 0700 pytest temp dir) the data lives in /tmp/batch-agent-pg.* instead, named
# in DIR/datadir, and `stop` deletes it (nothing else would).
set -euo pipefail

DB_NAME=batch_agent
SUPERUSER=postgres

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

find_bin() {
  if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/pg_ctl" ]]; then
    printf '%s\n' "$PG_BIN"
    return 0
  fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$dir" && -x "$dir/pg_ctl" && -x "$dir/initdb" ]]; then
    printf '%s\n' "$dir"
    return 0
  fi
  return 1
}

install_postgres() {
  [[ $EUID -eq 0 ]] || die "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing"
  log "installing PostgreSQL with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the package from creating and starting its own cluster on port 5432.
  mkdir -p /etc/postgresql-common
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    printf 'create_main_cluster = false\n' >/etc/postgresql-common/createcluster.conf
  fi
  local policy=/usr/sbin/policy-rc.d added_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
  fi
  local status=0
  # UCF_FORCE_CONFFOLD / --force-confold: keep that createcluster.conf without a prompt.
  {
    apt-get update -qq &&
      UCF_FORCE_CONFFOLD=1 apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql
  } >&2 || status=$?
  [[ -n $added_policy ]] && rm -f "$policy"
  [[ $status -eq 0 ]] || die "apt-get install postgresql failed (exit $status)"
}

# Run a command as the user that owns the cluster.
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    if command -v runuser >/dev/null; then
      runuser -u "$SUPERUSER" -- "$@"
    else
      su "$SUPERUSER" -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      printf '%s\n' "$port"
      return
    fi
  done
  die "no free port found"
}

# The data directory of the cluster kept in $DIR (may not exist yet).
data_dir() {
  if [[ -f "$DIR/datadir" ]]; then cat "$DIR/datadir"; else printf '%s\n' "$DIR/data"; fi
}

is_running() { [[ -f "$1/PG_VERSION" ]] && as_owner "$BIN/pg_ctl" status -D "$1" >/dev/null 2>&1; }

url_for() { printf 'postgresql://%s@127.0.0.1:%s/%s\n' "$SUPERUSER" "$1" "$DB_NAME"; }

init_cluster() {
  local data=$1
  if [[ $EUID -eq 0 ]]; then
    id "$SUPERUSER" >/dev/null 2>&1 || die "user $SUPERUSER is missing (install the postgresql package)"
    mkdir -p "$data"
    chown "$SUPERUSER": "$data"
    chmod 700 "$data"
    if ! as_owner test -w "$data"; then
      # The postgres user cannot reach DIR: keep the data in a directory it can reach.
      rmdir "$data" 2>/dev/null || true
      data=$(mktemp -d /tmp/batch-agent-pg.XXXXXX)
      chown "$SUPERUSER": "$data"
      printf '%s\n' "$data" >"$DIR/datadir"
    fi
  fi
  log "initdb in $data"
  # --no-sync: a throwaway cluster (fsync is off below too) need not wait for its files to reach disk.
  as_owner "$BIN/initdb" -D "$data" -U "$SUPERUSER" --auth=trust --encoding=UTF8 \
    --no-locale --no-sync >/dev/null
  cat >>"$data/postgresql.conf" <<'CONF'

# scripts/postgres.sh: loopback only, TCP only, fast and not crash-safe (tests only)
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
  cat >"$data/pg_hba.conf" <<'HBA'
# scripts/postgres.sh: trust, loopback only
host all all 127.0.0.1/32 trust
HBA
}

start() {
  [[ -n "$DIR" ]] || DIR=$(mktemp -d /tmp/batch-agent-pg-state.XXXXXX)
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  BIN=$(find_bin) || { install_postgres; BIN=$(find_bin) || die "pg_ctl not found after install"; }
  local data port
  data=$(data_dir)
  if [[ ! -f "$data/PG_VERSION" ]]; then
    init_cluster "$data"
    data=$(data_dir)
  fi
  if is_running "$data"; then
    port=$(cat "$DIR/port")
    log "already running on port $port"
  else
    local attempt
    for attempt in 1 2 3 4 5; do
      if [[ -n "$PORT" ]]; then
        port=$PORT
      elif [[ $attempt -eq 1 && -f "$DIR/port" ]]; then
        port=$(cat "$DIR/port")
      else
        port=$(free_port)
      fi
      if as_owner "$BIN/pg_ctl" start -w -t 60 -D "$data" -l "$data/server.log" \
        -o "-p $port" >/dev/null; then
        break
      fi
      if [[ -n "$PORT" || $attempt -eq 5 ]]; then
        tail -n 20 "$data/server.log" >&2 || true
        die "the server did not start"
      fi
      log "start on port $port failed; trying another port"
    done
    printf '%s\n' "$port" >"$DIR/port"
    log "started on 127.0.0.1:$port (data $data)"
  fi
  local psql=("$BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres)
  if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
    "${psql[@]}" -c "CREATE DATABASE $DB_NAME" >/dev/null
  fi
  url_for "$port"
}

stop() {
  [[ -n "$DIR" && -d "$DIR" ]] || die "usage: $0 stop DIR"
  DIR=$(cd "$DIR" && pwd)
  local data
  data=$(data_dir)
  if [[ -f "$data/PG_VERSION" ]]; then
    BIN=$(find_bin) || die "pg_ctl not found"
    if is_running "$data"; then
      as_owner "$BIN/pg_ctl" stop -w -t 60 -m fast -D "$data" >/dev/null
      log "stopped (data $data)"
    fi
  fi
  if [[ $1 == destroy || -f "$DIR/datadir" ]]; then
    rm -rf "$data"
    rm -f "$DIR/datadir" "$DIR/port"
  fi
}

MODE=start
case "${1:-}" in
  start | stop | destroy) MODE=$1; shift ;;
  -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
esac
DIR=${1:-}
PORT=${2:-}
case $MODE in
  start) start ;;
  stop | destroy) stop "$MODE" ;;
esac
