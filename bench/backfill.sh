#!/usr/bin/env bash
# Backfill throughput: migrate_backfill driven by a background worker, against
# a single UPDATE of the whole table and a PL/pgSQL keyset loop committing
# every 10,000 rows, on identical copies of the demo's orders table.
set -euo pipefail
ROWS=${BACKFILL_ROWS:-1000000}
DB=bench_backfill
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
$PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_migrate;
CREATE TABLE orders_single (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
    amount numeric(12,2) NOT NULL, note text, created_at timestamptz NOT NULL, amount_cents bigint);
INSERT INTO orders_single (customer_id, status, amount, note, created_at)
SELECT 1 + (g::bigint * 7919) % 50000, (ARRAY['new','paid','shipped','delivered','cancelled'])[1 + g % 5],
       round(((g * 37) % 50000) / 100.0, 2), CASE WHEN g % 5 = 0 THEN 'gift wrap' END,
       '2025-01-01'::timestamptz + (g % 730) * interval '1 day'
  FROM generate_series(1, $ROWS) g;
CREATE TABLE orders_loop (LIKE orders_single INCLUDING ALL);
INSERT INTO orders_loop OVERRIDING SYSTEM VALUE SELECT * FROM orders_single;
CREATE TABLE orders_job (LIKE orders_single INCLUDING ALL);
INSERT INTO orders_job OVERRIDING SYSTEM VALUE SELECT * FROM orders_single;
VACUUM ANALYZE orders_single, orders_loop, orders_job;
CHECKPOINT;
CREATE TABLE timings (what text, seconds float8);
SQL

time_sql() {   # time_sql LABEL SQL...: wall time of the statements, in seconds
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    $PSQL -d $DB -v ON_ERROR_STOP=1 "$@" >/dev/null
    t1=$(date +%s.%N)
    $PSQL -d $DB -c "INSERT INTO timings VALUES ('$label', $t1 - $t0)" >/dev/null
}

time_sql single -c "UPDATE orders_single SET amount_cents = (amount * 100)::bigint"
$PSQL -d $DB -c "CHECKPOINT" >/dev/null
time_sql loop <<'SQL'
DO $$
DECLARE last bigint := 0; upto bigint;
BEGIN
    LOOP
        SELECT max(id) INTO upto FROM (SELECT id FROM orders_loop WHERE id > last ORDER BY id LIMIT 10000) s;
        EXIT WHEN upto IS NULL;
        UPDATE orders_loop SET amount_cents = (amount * 100)::bigint WHERE id > last AND id <= upto;
        last := upto;
        COMMIT;
    END LOOP;
END $$;
SQL
$PSQL -d $DB -c "CHECKPOINT" >/dev/null
job=$($PSQL -d $DB -tAc "SELECT migrate_backfill('orders_job', 'amount_cents = (amount * 100)::bigint', 'amount_cents IS NULL')")
$PSQL -d $DB -c "SET client_min_messages = warning" -c "CALL migrate_wait($job)" >/dev/null
$PSQL -d $DB -c "INSERT INTO timings SELECT 'job', extract(epoch FROM finished_at - created_at) FROM pgmigrate.jobs WHERE job_id = $job" >/dev/null

check=$($PSQL -d $DB -tAc "SELECT (SELECT count(*) FROM orders_job WHERE amount_cents = (amount * 100)::bigint)
                                 = $ROWS AND (SELECT count(*) FROM orders_single WHERE amount_cents IS NULL) = 0")
[ "$check" = t ] || { echo "backfill result check failed" >&2; exit 1; }
batch=$($PSQL -d $DB -tAc "SELECT batch_size FROM pgmigrate.jobs WHERE job_id = $job")
batches=$($PSQL -d $DB -tAc "SELECT batches FROM pgmigrate.jobs WHERE job_id = $job")

echo "## Backfill throughput"
echo
echo "\`SET amount_cents = (amount * 100)::bigint\` on $(echo "$ROWS" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta') rows of the demo's orders table"
echo "(bigint identity key, numeric amount, text, new nullable bigint column), three identical vacuumed"
echo "copies, one per contender. migrate_backfill runs through a background worker with its defaults"
echo "(batch_size $batch, $batches batches, each committed with the job's cursor); its time is from"
echo "submit to the job's finish."
echo
echo "| how | seconds | rows/s | vs single UPDATE |"
echo "|---|---:|---:|---:|"
$PSQL -d $DB -tA <<SQL
SELECT format('| %s | %s | %s | %sx |',
              CASE what WHEN 'single' THEN 'single UPDATE (baseline)'
                        WHEN 'loop' THEN 'PL/pgSQL keyset loop, COMMIT every 10,000 rows (baseline)'
                        ELSE 'migrate_backfill (worker)' END,
              round(seconds::numeric, 2), round($ROWS / seconds), 
              round(((SELECT seconds FROM timings WHERE what = 'single') / seconds)::numeric, 2))
  FROM timings ORDER BY CASE what WHEN 'single' THEN 1 WHEN 'loop' THEN 2 ELSE 3 END;
SQL
