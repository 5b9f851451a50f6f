#!/usr/bin/env bash
# Stop what scripts/quickstart.sh (and scripts/deps.sh) started: the example worker, nginx,
# the Adze services, and any PRIVATE PostgreSQL/Redis/NATS instances under .adze. Servers
# that were already running on the machine (the system services) are never touched.
#
#   scripts/stop.sh             everything above
#   scripts/stop.sh --keep-deps only the worker, nginx and the services
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/nginx.sh
. "$ADZE_REPO/scripts/lib/nginx.sh"
# shellcheck source=lib/fleet.sh
. "$ADZE_REPO/scripts/lib/fleet.sh"

stop_private_postgres() {
  local record="$ADZE_RUN_DIR/postgres.pgdata" pgdata version
  [[ -r "$record" ]] || return 0
  pgdata="$(cat "$record")"
  if [[ -f "$pgdata/postmaster.pid" ]]; then
    version="$(cat "$pgdata/PG_VERSION")"
    if ! as_pg_user "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null; then
      warn "could not stop the private PostgreSQL in $pgdata (log: $pgdata/postgres.log)"
      return 1
    fi
    echo "stopped private PostgreSQL ($pgdata)"
  fi
  rm -f "$record"
}

main() {
  local keep_deps=0
  case "${1:-}" in
    --keep-deps) keep_deps=1 ;;
    "") ;;
    *) die "usage: scripts/stop.sh [--keep-deps]" ;;
  esac
  fleet_stop
  if ((keep_deps == 0)); then
    stop_pidfile "$ADZE_RUN_DIR/nats.pid" nats-server
    stop_pidfile "$ADZE_RUN_DIR/redis.pid" redis-server
    stop_private_postgres
  fi
}

main "$@"
