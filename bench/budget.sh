#!/usr/bin/env bash
# A rows-per-second budget holds: a backfill with max_rows_per_second runs
# through a worker; its measured rate (rows over the time from its first
# batch to its finish) should stay within 10% of the budget.
set -euo pipefail
ROWS=${BUDGET_ROWS:-1000000}
BUDGET=${BUDGET_ROWS_PER_SECOND:-50000}
DB=bench_budget
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
$PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_migrate;
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount numeric(12,2) NOT NULL, amount_cents bigint);
INSERT INTO orders (amount) SELECT round(((g::bigint * 37) % 50000) / 100.0, 2) FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE orders;
SQL
job=$($PSQL -d $DB -tAc "SELECT migrate_backfill('orders', 'amount_cents = (amount * 100)::bigint', max_rows_per_second => $BUDGET)")
$PSQL -d $DB -c "SET client_min_messages = warning" -c "CALL migrate_wait($job)" >/dev/null
read -r rate secs throttled batches size < <($PSQL -d $DB -tA -F' ' -c "
    SELECT round(j.rows_done / extract(epoch FROM j.finished_at - j.started_at)),
           round(extract(epoch FROM j.finished_at - j.started_at)::numeric, 1),
           round(j.throttled_ms / 1000.0, 1), j.batches,
           (SELECT max(b.batch_size) FROM pgmigrate.batches b WHERE b.job_id = j.job_id)
      FROM pgmigrate.jobs j WHERE j.job_id = $job")
dev=$(awk -v r="$rate" -v b="$BUDGET" 'BEGIN { printf "%.1f", (r - b) * 100 / b }')
echo "## A rows-per-second budget"
echo
echo "migrate_backfill of $(echo "$ROWS" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta') rows with \`max_rows_per_second => $BUDGET\`, through a worker:"
echo "$batches batches of up to $size rows, $secs s from first batch to finish, $throttled s of it waiting for the budget."
echo
echo "| budget rows/s | measured rows/s | deviation | target: within 10% |"
echo "|---:|---:|---:|---|"
ok=$(awk -v d="$dev" 'BEGIN { print (d < 0 ? -d : d) <= 10 ? "met" : "MISSED" }')
echo "| $BUDGET | $rate | $dev% | $ok |"
