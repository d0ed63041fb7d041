#!/usr/bin/env bash
# The cost of a Prometheus scrape: the four queries of
# monitoring/postgres_exporter/queries.yaml against a database with 100
# jobs (queued, scheduled, paused, running, recurring, succeeded, failed),
# run back to back by pgbench for 10 s, one scrape per transaction.
# Baselines in the same run: SELECT 1 (the round trip) and one read of
# migrate_progress (what a DBA's \watch costs).  Target: under 10 ms.
set -euo pipefail
DB=bench_metrics
BENCH_BIN=/usr/lib/postgresql/15/bin
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
$PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION pg_migrate;
CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);
INSERT INTO t (id) SELECT g FROM generate_series(1, 100000) g;
ANALYZE t;
-- 30 that ran and ended: 25 succeeded, 5 failed.
SELECT migrate_backfill('t', 'n = n', where_clause => format('id <= %s', 10 * g)) FROM generate_series(1, 25) g;
SELECT migrate_backfill('t', 'n = n / (id - id)', where_clause => format('id <= %s', g)) FROM generate_series(1, 5) g;
SQL
# Let them end before the rest is queued.
for i in $(seq 1 600); do
    left=$($PSQL -d $DB -tAc "SELECT count(*) FROM migrate_progress WHERE state NOT IN ('succeeded', 'failed')")
    [ "$left" = 0 ] && break
    sleep 0.1
done
$PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
-- 40 scheduled, 15 paused, 5 recurring, 5 gated, 5 running under a budget.
SELECT migrate_backfill('t', 'n = n', run_at => now() + interval '1 day') FROM generate_series(1, 40);
SELECT migrate_pause(migrate_backfill('t', 'n = n', run_at => now() + interval '1 day')) FROM generate_series(1, 15);
SELECT migrate_reindex('t_pkey', schedule => format('%s 3 * * 0', g)) FROM generate_series(1, 5) g;
SELECT migrate_backfill('t', 'n = n', after_jobs => ARRAY[(SELECT min(job_id) FROM migrate_progress WHERE state = 'queued')])
  FROM generate_series(1, 5);
SELECT migrate_backfill('t', 'n = n + 0', batch_size => 10, max_rows_per_second => 10) FROM generate_series(1, 5);
SQL
jobs=$($PSQL -d $DB -tAc "SELECT count(*) FROM migrate_progress WHERE parent_job IS NULL")
series=$($PSQL -d $DB -tAc "SELECT count(*) FROM migrate_metrics")

scrape=$(mktemp); one=$(mktemp); progress=$(mktemp)
python3 - "monitoring/postgres_exporter/queries.yaml" > "$scrape" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for q in re.findall(r"query: \|\n((?:    .*\n)+)", text):
    print(" ".join(l.strip() for l in q.splitlines()) + ";")
PY
echo "SELECT 1;" > "$one"
echo "SELECT * FROM migrate_progress;" > "$progress"
queries=$(grep -c ';$' "$scrape")

lat() {   # average latency (ms) of a script run by one client for 10 s
    PGPASSWORD= $BENCH_BIN/pgbench -n -h 127.0.0.1 -p "$BENCH_PORT" -U postgres -c 1 -T 10 -f "$1" $DB 2>/dev/null \
        | awk '/latency average/ {print $4}'
}
l_one=$(lat "$one"); l_progress=$(lat "$progress"); l_scrape=$(lat "$scrape")
rm -f "$scrape" "$one" "$progress"
verdict=$(awk -v s="$l_scrape" 'BEGIN { print (s < 10) ? "met" : "MISSED" }')

cat <<EOF2
## The cost of a Prometheus scrape

A database with $jobs jobs (25 succeeded, 5 failed, 40 scheduled, 15 paused, 5 recurring reindexes,
5 waiting behind a gate, 5 running under a budget of 10 rows/s); \`migrate_metrics\` has $series rows.
One scrape is the $queries queries of \`monitoring/postgres_exporter/queries.yaml\`, run back to back
by pgbench (one client, 10 s, over TCP on the same machine).

| what | average latency |
|---|---:|
| \`SELECT 1\` (the round trip, baseline) | $l_one ms |
| \`SELECT * FROM migrate_progress\` (baseline) | $l_progress ms |
| one scrape: the $queries exporter queries | $l_scrape ms |

Target under 10 ms per scrape: $verdict.
EOF2
