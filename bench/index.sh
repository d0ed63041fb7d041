#!/usr/bin/env bash
# A live writer during an index build: pgbench updates random rows of the
# table (rate-limited, 2 clients) while migrate_create_index builds an
# index through a worker (CREATE INDEX CONCURRENTLY), and again, on an
# identical table, while a plain CREATE INDEX builds the same index.
set -euo pipefail
ROWS=${INDEX_ROWS:-2000000}
DB=bench_index
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
for t in orders_job orders_plain; do
    $PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE $t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id bigint NOT NULL,
                 created_at timestamptz NOT NULL, note text);
INSERT INTO $t (customer_id, created_at)
SELECT (g::bigint * 7919) % 100000, timestamptz '2025-01-01' + g * interval '1 second' FROM generate_series(1, $ROWS) g;
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
. "$(dirname "$0")/lib/latency.sh"
WRITER_SECONDS=$(( ROWS / 200000 + 14 ))
INDEX="(customer_id, created_at)"

# 1. during migrate_create_index (a worker runs CREATE INDEX CONCURRENTLY)
writer orders_job "$WRITER_SECONDS" job &
wpid=$!
sleep 2
t0=$(date +%s.%N)
job=$($PSQL -d $DB -tAc "SELECT migrate_create_index('CREATE INDEX orders_job_customer_idx ON orders_job $INDEX')")
$PSQL -d $DB -c "SET client_min_messages = warning" -c "CALL migrate_wait($job)" >/dev/null
t1=$(date +%s.%N)
wait "$wpid"
latencies job "$t0" "$t1" > "$WORK/job.lat"
build=$($PSQL -d $DB -tAc "SELECT format('%s, %s attempt(s)', size, count(*) OVER ()) FROM migrate_index_builds WHERE job_id = $job AND outcome = 'succeeded'")

# 2. during a plain CREATE INDEX
writer orders_plain "$WRITER_SECONDS" plain &
wpid=$!
sleep 2
s0=$(date +%s.%N)
$PSQL -d $DB -c "SET maintenance_work_mem = '64MB'" -c "CREATE INDEX orders_plain_customer_idx ON orders_plain $INDEX" >/dev/null
s1=$(date +%s.%N)
wait "$wpid"
# writes blocked by the build end just after it
latencies plain "$s0" "$(awk -v a="$s1" "BEGIN { printf \"%.6f\", a + 1 }")" > "$WORK/plain.lat"

row() {   # row LABEL FILE SECONDS
    local n p50 p99 max
    n=$(wc -l < "$2"); p50=$(pct 50 < "$2"); p99=$(pct 99 < "$2"); max=$(tail -n1 "$2")
    printf '| %s | %.1f | %s | %s | %s | %.1f |\n' "$1" "$3" "$n" "$p50" "$p99" "$max"
}
job_s=$(awk -v a="$t1" -v b="$t0" "BEGIN { print a - b }")
plain_s=$(awk -v a="$s1" -v b="$s0" "BEGIN { print a - b }")
max_job=$(tail -n1 "$WORK/job.lat")
echo "## A live writer during an index build"
echo
echo "pgbench updates random rows of a $(echo "$ROWS" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')-row table (2 clients, 100 updates/s in all) while an"
echo "index on $INDEX is built: by migrate_create_index through a worker (CREATE INDEX"
echo "CONCURRENTLY; $build; its time is from submit to finish), and, on an identical table, by a"
echo "plain CREATE INDEX (baseline). Writes that ended during each build count."
echo
echo "| during | seconds | writes | p50 ms | p99 ms | max ms |"
echo "|---|---:|---:|---:|---:|---:|"
row "migrate_create_index (worker, CONCURRENTLY)" "$WORK/job.lat" "$job_s"
row "plain CREATE INDEX (baseline)" "$WORK/plain.lat" "$plain_s"
echo
echo "The longest write during migrate_create_index took $(printf '%.1f' "$max_job") ms, while the build took $(printf '%.1f' "$job_s") s;"
echo "during the plain CREATE INDEX, writes waited for the whole build."
