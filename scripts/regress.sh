#!/usr/bin/env bash
# SQL-visible behaviour: pg_regress golden files in tests/pg_regress (the
# layout `cargo pgrx regress` uses).  cargo-pgrx 0.18.1 starts its own server
# as the calling user, which PostgreSQL refuses for root, so this script runs
# PostgreSQL's pg_regress against a cluster started as "postgres".
#
#   scripts/regress.sh [test ...]     default: every tests/pg_regress/sql/*.sql
#   REGRESS_ACCEPT=1 scripts/regress.sh name   copy results/name.out to expected/
#
# Expects the extension to be installed already (make install).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR=15
PGXS=$(dirname "$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --pgxs)")
PG_REGRESS=$PGXS/../test/regress/pg_regress
DIR=.clusters/regress
PORT=${REGRESS_PORT:-55433}
DB=pg_migrate_regress

scripts/cluster.sh start "$DIR" "$PORT" fsync=off >/dev/null
trap 'scripts/cluster.sh destroy "$DIR"' EXIT

if [ $# -gt 0 ]; then tests=("$@"); else
    tests=(setup)
    for f in tests/pg_regress/sql/*.sql; do
        n=$(basename "$f" .sql); [ "$n" = setup ] || tests+=("$n")
    done
fi
[ "${tests[0]}" = setup ] || tests=(setup "${tests[@]}")

psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
     -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"

if [ "${REGRESS_ACCEPT:-0}" = 1 ]; then
    for t in "${tests[@]}"; do [ -f "tests/pg_regress/expected/$t.out" ] || : > "tests/pg_regress/expected/$t.out"; done
fi

out=$(mktemp -d)
chmod 755 "$out"
set +e
PGTZ=UTC PGDATESTYLE='ISO, YMD' "$PG_REGRESS" --host=127.0.0.1 --port="$PORT" --user=postgres \
    --use-existing --dbname="$DB" \
    --inputdir=tests/pg_regress --outputdir="$out" "${tests[@]}"
rc=$?
set -e
rm -rf tests/pg_regress/results
cp -r "$out/results" tests/pg_regress/results
if [ $rc -ne 0 ] && [ -f "$out/regression.diffs" ] && [ "${REGRESS_ACCEPT:-0}" != 1 ]; then
    cp "$out/regression.diffs" tests/pg_regress/regression.diffs
    echo "diffs: tests/pg_regress/regression.diffs"
    head -n 120 tests/pg_regress/regression.diffs
fi
if [ "${REGRESS_ACCEPT:-0}" = 1 ]; then
    for t in "${tests[@]}"; do cp "tests/pg_regress/results/$t.out" "tests/pg_regress/expected/$t.out"; done
    echo "accepted: ${tests[*]}"
    rc=0
fi
rm -rf "$out"
exit $rc
