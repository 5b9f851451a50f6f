#!/usr/bin/env bash
# Bring up what Adze needs: PostgreSQL 15, Redis 7, nats-server 2.9 with JetStream, nginx.
#
#   source scripts/deps.sh     exports ADZE_DATABASE_URL, ADZE_PG_ADMIN_URL, ADZE_NATS_URL,
#                              ADZE_REDIS_URL into the calling shell
#   scripts/deps.sh            the same bring-up; the values land in .adze/env
#
# Servers already answering on their standard ports (127.0.0.1:5432 with trust auth for user
# `postgres`, :6379, :4222 with JetStream) are used as they are. Otherwise a private instance
# is started under $ADZE_DATA_DIR (default <repo>/.adze/data) on its own port (55432, 56379,
# 54222), after installing the Debian package if the binary is absent. Re-running reuses
# what is up. ADZE_FORCE_PRIVATE=1 skips the standard ports and always uses private instances.
# scripts/stop.sh stops the private instances (never the system services).

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced. Do the work in a child bash, so that its `set -e` and `exit` cannot end an
  # interactive caller's shell, then import the values it wrote.
  _adze_home="${ADZE_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.adze}"
  # shellcheck source=/dev/null
  ADZE_HOME="$_adze_home" bash "${BASH_SOURCE[0]}" && . "$_adze_home/deps.env"
  _adze_rc=$?
  unset _adze_home
  return "$_adze_rc"
fi

set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

DATA_DIR="${ADZE_DATA_DIR:-$ADZE_HOME/data}"
FORCE_PRIVATE="${ADZE_FORCE_PRIVATE:-0}"
DB_NAME=adze
PG_PRIVATE_PORT=55432
REDIS_PRIVATE_PORT=56379
NATS_PRIVATE_PORT=54222
START_TIMEOUT=30

use_system() { [[ "$FORCE_PRIVATE" != 1 ]]; }

# ---- PostgreSQL ---------------------------------------------------------------------

psql_admin() { # psql_admin PORT ARGS...: as superuser `postgres`, never prompting
  local port="$1"
  shift
  PGCONNECT_TIMEOUT=3 psql -X -w -q -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

pg_usable() { psql_admin "$1" -tAc 'select 1' 2>/dev/null | grep -qx 1; }

# Highest installed server version's bin dir (Debian keeps them in /usr/lib/postgresql/N/bin).
pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

# The data directory must be reachable by the user the server runs as. A checkout in a
# private home (/root/adze, mode 700) is not, so fall back to a fixed place in /var/tmp.
pg_datadir() {
  local dir="$DATA_DIR/postgres"
  if [[ $EUID -eq 0 ]] && ! runuser -u postgres -- test -x "$DATA_DIR"; then
    dir="/var/tmp/adze-postgres-$(printf '%s' "$DATA_DIR" | cksum | cut -d' ' -f1)"
    warn "user postgres cannot reach $DATA_DIR; the private cluster lives in $dir"
  fi
  echo "$dir"
}

start_private_postgres() {
  local port="$PG_PRIVATE_PORT" bindir pgdata log
  bindir="$(pg_bindir)" || {
    apt_install postgresql
    bindir="$(pg_bindir)" || die "postgresql installed, but no /usr/lib/postgresql/*/bin/initdb"
  }
  if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  pgdata="$(pg_datadir)"
  log="$pgdata/postgres.log"
  mkdir -p "$ADZE_RUN_DIR"
  echo "$pgdata" >"$ADZE_RUN_DIR/postgres.pgdata" # for scripts/stop.sh
  if [[ ! -s "$pgdata/PG_VERSION" ]]; then
    say "initialising a private PostgreSQL cluster in $pgdata"
    mkdir -p "$pgdata"
    chmod 700 "$pgdata"
    [[ $EUID -eq 0 ]] && chown postgres: "$pgdata"
    as_pg_user "$bindir/initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --no-locale \
      >"$DATA_DIR/postgres-initdb.log" 2>&1 ||
      die "initdb failed (log: $DATA_DIR/postgres-initdb.log)" "$DATA_DIR/postgres-initdb.log"
  fi
  say "starting private PostgreSQL on 127.0.0.1:$port"
  # TCP on loopback only; no Unix socket, so nothing collides with a system cluster's
  # socket directory. -W: we wait ourselves below, with the same message as the others.
  as_pg_user "$bindir/pg_ctl" -D "$pgdata" -l "$log" -W \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start >/dev/null ||
    die "pg_ctl start failed (log: $log)" "$log"
  wait_until "$START_TIMEOUT" "PostgreSQL on 127.0.0.1:$port" "$log" pg_usable "$port"
}

ensure_postgres() {
  command -v psql >/dev/null || apt_install postgresql-client
  if use_system && pg_usable 5432; then
    PG_PORT=5432
    ok "PostgreSQL: system server on 127.0.0.1:5432"
    return
  fi
  if use_system && tcp_open 127.0.0.1 5432; then
    warn "127.0.0.1:5432 answers but does not let user postgres in without a password; using a private cluster"
  fi
  PG_PORT="$PG_PRIVATE_PORT"
  pg_usable "$PG_PORT" || start_private_postgres
  ok "PostgreSQL: private server on 127.0.0.1:$PG_PORT"
  local version
  version="$(psql_admin "$PG_PORT" -tAc 'show server_version_num')"
  ((version >= 150000)) || warn "PostgreSQL server is $version; Adze is built for 15 or newer"
}

ensure_database() {
  if ! psql_admin "$PG_PORT" -tAc "select 1 from pg_database where datname = '$DB_NAME'" | grep -qx 1; then
    psql_admin "$PG_PORT" -v ON_ERROR_STOP=1 -c "create database \"$DB_NAME\"" ||
      die "could not create database $DB_NAME on 127.0.0.1:$PG_PORT"
    ok "created database $DB_NAME"
  fi
}

# ---- Redis --------------------------------------------------------------------------

# Speaks the protocol over bash's /dev/tcp, so no redis-cli is needed to find out.
redis_ping() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 &&
    IFS= read -r line <&3 && [[ $line == +PONG* ]]' _ "$1" 2>/dev/null
}

ensure_redis() {
  if use_system && redis_ping 6379; then
    REDIS_PORT=6379
    ok "Redis: system server on 127.0.0.1:6379"
    return
  fi
  REDIS_PORT="$REDIS_PRIVATE_PORT"
  if ! redis_ping "$REDIS_PORT"; then
    command -v redis-server >/dev/null || apt_install redis-server
    local dir="$DATA_DIR/redis"
    mkdir -p "$dir" "$ADZE_RUN_DIR"
    say "starting private Redis on 127.0.0.1:$REDIS_PORT"
    # Nothing is kept on disk: Redis holds only rate-limit buckets, rebuilt on demand.
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
      --pidfile "$ADZE_RUN_DIR/redis.pid" --logfile "$dir/redis.log" --save '' --appendonly no ||
      die "redis-server failed to start (log: $dir/redis.log)" "$dir/redis.log"
    wait_until "$START_TIMEOUT" "Redis on 127.0.0.1:$REDIS_PORT" "$dir/redis.log" redis_ping "$REDIS_PORT"
  fi
  ok "Redis: private server on 127.0.0.1:$REDIS_PORT"
}

# ---- NATS ---------------------------------------------------------------------------

# A NATS server greets every connection with an INFO line; JetStream shows in it.
nats_jetstream() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r line <&3 &&
    [[ $line == INFO* && $line == *\"jetstream\":true* ]]' _ "$1" 2>/dev/null
}

ensure_nats() {
  if use_system && nats_jetstream 4222; then
    NATS_PORT=4222
    ok "NATS: system server (JetStream) on 127.0.0.1:4222"
    return
  fi
  if use_system && tcp_open 127.0.0.1 4222; then
    warn "127.0.0.1:4222 answers but without JetStream; using a private nats-server"
  fi
  NATS_PORT="$NATS_PRIVATE_PORT"
  if ! nats_jetstream "$NATS_PORT"; then
    command -v nats-server >/dev/null || apt_install nats-server
    local dir="$DATA_DIR/nats"
    mkdir -p "$dir/jetstream"
    say "starting private nats-server (JetStream) on 127.0.0.1:$NATS_PORT"
    # nats-server cannot daemonise itself; start_bg detaches it into its own session.
    start_bg nats "$dir/nats.log" nats-server -js -sd "$dir/jetstream" \
      -a 127.0.0.1 -p "$NATS_PORT" -l "$dir/nats.log"
    wait_until "$START_TIMEOUT" "nats-server on 127.0.0.1:$NATS_PORT" "$dir/nats.log" \
      --pid "$ADZE_RUN_DIR/nats.pid" nats-server nats_jetstream "$NATS_PORT"
  fi
  ok "NATS: private server (JetStream) on 127.0.0.1:$NATS_PORT"
}

# ---- nginx (the gRPC-aware proxy in front of the fleet) -----------------------------

ensure_nginx() {
  command -v nginx >/dev/null || apt_install nginx-light
  command -v nginx >/dev/null || die "nginx-light installed, but no nginx binary on PATH"
}

# ---- main ---------------------------------------------------------------------------

write_env() {
  local deps_env="$ADZE_HOME/deps.env" env="$ADZE_HOME/env"
  mkdir -p "$ADZE_HOME"
  cat >"$deps_env" <<EOF
# Written by scripts/deps.sh: where Adze's dependencies answer.
export ADZE_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME
export ADZE_PG_ADMIN_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export ADZE_NATS_URL=nats://127.0.0.1:$NATS_PORT
export ADZE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
EOF
  # .adze/env is the file for people: the dependencies plus, once scripts/quickstart.sh has
  # run, its secret and token. Scripts source only deps.env, so no token leaks into tests.
  cat >"$env" <<EOF
# source this file: the dependencies' addresses and, after scripts/quickstart.sh, its token.
. "$deps_env"
[ -f "$ADZE_HOME/quickstart.env" ] && . "$ADZE_HOME/quickstart.env"
true
EOF
}

main() {
  mkdir -p "$DATA_DIR"
  ensure_postgres
  ensure_database
  ensure_redis
  ensure_nats
  ensure_nginx
  write_env
  ok "dependencies up; their addresses are in $ADZE_HOME/env"
}

main "$@"
