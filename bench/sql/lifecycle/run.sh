#!/usr/bin/env bash
# The write path of a one-task run in plain SQL, under shapes of the tasks and runs tables
# the engine does not have, against the shape it has (bench/RESULTS.md, session 30).
#
#   bench/sql/lifecycle/run.sh [ROUNDS [BATCHES [SHAPE…]]]     (defaults: 4 300 all four)
#
# Each round makes a fresh database per shape (`adze_lifecycle_<shape>`: the engine's
# migrations, then the shape's changes), runs BATCHES batches of 200 runs through
# its statements with pgbench (one client, commits not waiting for the WAL flush, as the
# engine's batches), vacuums, and prints per shape: the mean time of a batch (its three
# statements), each statement's mean, the WAL written per run and the vacuum's time.
# Shapes run in turn, in reverse order every other round. Postgres is reached with psql
# and pgbench at PGHOST/PGPORT/PGUSER (default 127.0.0.1:5432, postgres); the databases
# are dropped at the end.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
rounds=${1:-4}
batches=${2:-300}
shift $(($# < 2 ? $# : 2))
shapes=("$@")
[[ ${#shapes[@]} -gt 0 ]] || shapes=(current narrow one-row no-run-key)
# A shape is its schema changes (`<shape>.sql`), its statements (`<shape>.pgb`), or both;
# one without statements of its own runs `current.pgb`.
script() { if [[ -f "$here/$1.pgb" ]]; then echo "$here/$1.pgb"; else echo "$here/current.pgb"; fi; }
for s in "${shapes[@]}"; do
  [[ -f "$here/$s.pgb" || -f "$here/$s.sql" ]] ||
    { echo "no shape $s (want one of: current narrow one-row no-run-key)" >&2; exit 2; }
done
psql_q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

fresh() {
  local db=adze_lifecycle_${1//-/_}
  psql_q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  for f in "$repo"/migrations/*.sql; do psql_q -d "$db" -f "$f" >/dev/null; done
  psql_q -d "$db" -f "$here/uuid7.sql"
  [[ -f "$here/$1.sql" ]] && psql_q -d "$db" -f "$here/$1.sql"
  echo "$db"
}

cleanup() {
  for s in "${shapes[@]}"; do psql_q -d postgres -c "DROP DATABASE IF EXISTS adze_lifecycle_${s//-/_}" || true; done
}
trap cleanup EXIT

for r in $(seq 1 "$rounds"); do
  order=("${shapes[@]}")
  if ((r % 2 == 0)); then
    order=()
    for ((i = ${#shapes[@]} - 1; i >= 0; i--)); do order+=("${shapes[i]}"); done
  fi
  for s in "${order[@]}"; do
    db=$(fresh "$s")
    w0=$(psql_q -d "$db" -c "SELECT pg_current_wal_lsn()")
    out=$(PGOPTIONS="-c synchronous_commit=off" pgbench -n -r -t "$batches" -f "$(script "$s")" "$db" 2>&1)
    w1=$(psql_q -d "$db" -c "SELECT pg_current_wal_lsn()")
    wal=$(psql_q -d "$db" -c "SELECT pg_wal_lsn_diff('$w1', '$w0')")
    t0=$(date +%s%N)
    psql_q -d "$db" -c "VACUUM" 
    t1=$(date +%s%N)
    batch=$(awk '/latency average/ {print $4}' <<<"$out")
    stmts=$(awk '/statement latencies/ {f = 1; next} f && NF {printf "%s ", $1}' <<<"$out")
    echo "round=$r shape=$s batch_ms=$batch statements_ms=[${stmts% }] wal_bytes_per_run=$((wal / (batches * 200))) vacuum_ms=$(((t1 - t0) / 1000000))"
  done
done
