#!/usr/bin/env bash
# A live writer during a backfill: pgbench updates random rows of the table
# (rate-limited, 2 clients) while migrate_backfill runs through a worker, and
# again while a single UPDATE of the whole table runs.  The writer's p99
# latency should stay under twice the target batch duration during the
# backfill (a writer waits at most for the batch that holds its row).
set -euo pipefail
ROWS=${LATENCY_ROWS:-2000000}
TARGET_MS=200
DB=bench_latency
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
for t in orders_job orders_single; do
    $PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE IF NOT EXISTS $t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount numeric(12,2) NOT NULL,
                               note text, amount_cents bigint);
INSERT INTO $t (amount) SELECT round(((g::bigint * 37) % 50000) / 100.0, 2) FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE $t;
SQL
done
$PSQL -d $DB -c "CREATE EXTENSION IF NOT EXISTS pg_migrate" -c "CHECKPOINT" >/dev/null

writer() {   # writer TABLE SECONDS PREFIX: random single-row updates, 100/s
    cat > "$WORK/$1.sql" <<SQL
\set id random(1, $ROWS)
UPDATE $1 SET note = 'touched' WHERE id = :id;
SQL
    (cd "$WORK" && /usr/lib/postgresql/15/bin/pgbench -n -c 2 -j 1 -R 100 -T "$2" -h 127.0.0.1 -p "$BENCH_PORT" \
        -U postgres -f "$WORK/$1.sql" -l --log-prefix="$3" "$DB" >/dev/null 2>&1)
}

# Latencies (ms) of writes that ended between two epochs, sorted.
. "$(dirname "$0")/lib/latency.sh"

# Each writer runs a fixed time and ends by itself (its per-write log is
# only complete then), long enough to outlast the backfill it watches.
WRITER_SECONDS=$(( ROWS / 100000 + 12 ))

# 1. during migrate_backfill
writer orders_job "$WRITER_SECONDS" job &
wpid=$!
sleep 2   # let the writer settle before the backfill starts
t0=$(date +%s.%N)
job=$($PSQL -d $DB -tAc "SELECT migrate_backfill('orders_job', 'amount_cents = (amount * 100)::bigint', 'amount_cents IS NULL')")
$PSQL -d $DB -c "SET client_min_messages = warning" -c "CALL migrate_wait($job)" >/dev/null
t1=$(date +%s.%N)
wait "$wpid"
latencies job "$t0" "$t1" > "$WORK/job.lat"

# 2. during a single UPDATE
writer orders_single "$WRITER_SECONDS" single &
wpid=$!
sleep 2
s0=$(date +%s.%N)
$PSQL -d $DB -c "UPDATE orders_single SET amount_cents = (amount * 100)::bigint" >/dev/null
s1=$(date +%s.%N)
wait "$wpid"
# writes blocked by the UPDATE end just after it commits
latencies single "$s0" "$(awk -v a="$s1" "BEGIN { printf \"%.6f\", a + 1 }")" > "$WORK/single.lat"

row() {   # row LABEL FILE SECONDS
    local n p50 p99 max
    n=$(wc -l < "$2"); p50=$(pct 50 < "$2"); p99=$(pct 99 < "$2"); max=$(tail -n1 "$2")
    printf '| %s | %.1f | %s | %s | %s | %s |\n' "$1" "$3" "$n" "$p50" "$p99" "$max"
}
p99_job=$(pct 99 < "$WORK/job.lat")
echo "## A live writer during the backfill"
echo
echo "pgbench updates random rows of a $(echo "$ROWS" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')-row table (2 clients, 100 updates/s in all) while"
echo "the table is backfilled. Writes that ended during each backfill count. Target: p99 under twice the"
echo "target batch duration ($((2 * TARGET_MS)) ms) during migrate_backfill."
echo
echo "| during | seconds | writes | p50 ms | p99 ms | max ms |"
echo "|---|---:|---:|---:|---:|---:|"
row "migrate_backfill (worker, default 200 ms batches)" "$WORK/job.lat" "$(awk -v a="$t1" -v b="$t0" "BEGIN { print a - b }")"
row "single UPDATE of the whole table (baseline)" "$WORK/single.lat" "$(awk -v a="$s1" -v b="$s0" "BEGIN { print a - b }")"
echo
if awk -v p="$p99_job" -v t="$((2 * TARGET_MS))" 'BEGIN { exit !(p < t) }'; then
    echo "Target met: p99 $p99_job ms < $((2 * TARGET_MS)) ms during migrate_backfill."
else
    echo "Target MISSED: p99 $p99_job ms >= $((2 * TARGET_MS)) ms during migrate_backfill."
fi
