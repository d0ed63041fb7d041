#!/usr/bin/env bash
# The demo: set up, build and install pg_migrate, start a local server with
# it preloaded, create a 1,000,000-row table and show pg_migrate at work.
# Run it again at will: it reuses what is there.  `make demo-stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
DIR=.demo
PORT=${DEMO_PORT:-54329}
DB=demo
PSQL=(psql -X -h 127.0.0.1 -p "$PORT" -U postgres)

scripts/setup.sh

echo "==> building and installing pg_migrate (release)"
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null

echo "==> local server in $DIR on port $PORT"
if scripts/cluster.sh status "$DIR"; then
    scripts/cluster.sh restart "$DIR"          # load the build just installed
else
    scripts/cluster.sh start "$DIR" "$PORT"
fi

if ! "${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    "${PSQL[@]}" -d postgres -qc "CREATE DATABASE $DB"
fi

# The demo database follows the build: when the installed extension script
# changed since the last run (a new build of the same unreleased version),
# recreate the extension.
script=/usr/share/postgresql/15/extension/pg_migrate--$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2).sql
sum=$(md5sum "$script" | cut -d' ' -f1)
"${PSQL[@]}" -d "$DB" -qc "CREATE TABLE IF NOT EXISTS demo_meta (script_md5 text)" 2>/dev/null
if [ "$("${PSQL[@]}" -d "$DB" -tAc "SELECT script_md5 FROM demo_meta")" != "$sum" ]; then
    "${PSQL[@]}" -d "$DB" -q -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS pg_migrate CASCADE" \
        -c "CREATE EXTENSION pg_migrate" -c "TRUNCATE demo_meta" -c "INSERT INTO demo_meta VALUES ('$sum')"
fi

echo "==> demo data: orders, 1,000,000 rows"
"${PSQL[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_migrate;
CREATE TABLE IF NOT EXISTS orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint        NOT NULL,
    status      text          NOT NULL,
    amount      numeric(12,2) NOT NULL,
    currency    char(3)       NOT NULL DEFAULT 'EUR',
    note        text,
    created_at  timestamptz   NOT NULL
);
INSERT INTO orders (customer_id, status, amount, note, created_at)
SELECT 1 + (random() * 49999)::bigint,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + floor(random() * 5)::int],
       round((random() * 500)::numeric, 2),
       CASE WHEN random() < 0.2 THEN 'gift wrap' END,
       now() - random() * interval '730 days'
  FROM generate_series(1, 1000000)
 WHERE NOT EXISTS (SELECT 1 FROM orders);
ANALYZE orders;
SQL
"${PSQL[@]}" -d "$DB" -tAc "SELECT format('    %s rows, %s', count(*), pg_size_pretty(pg_total_relation_size('orders'))) FROM orders"

echo
echo "==> 1. migration history"
echo "    A Django project adopts pg_migrate: its django_migrations rows are imported."
"${PSQL[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS django_migrations (
    id serial PRIMARY KEY, app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied timestamptz NOT NULL);
INSERT INTO django_migrations (app, name, applied)
SELECT v.app, v.name, v.applied::timestamptz
  FROM (VALUES ('contenttypes', '0001_initial', '2024-01-10 09:00:00+00'),
               ('auth', '0001_initial', '2024-01-10 09:00:01+00'),
               ('shop', '0001_initial', '2024-01-10 09:00:02+00'),
               ('shop', '0041_orders_note', '2025-06-02 21:14:00+00')) v(app, name, applied)
 WHERE NOT EXISTS (SELECT 1 FROM django_migrations);
SQL
"${PSQL[@]}" -d "$DB" -tAc "SELECT format('    imported %s new rows (a second run imports 0)', migrate_import_django())"

echo "    A deploy runs migration shop.0042_orders_amount_cents between migrate_start and migrate_finish:"
"${PSQL[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 <<'SQL'
DO $$
DECLARE run bigint;
BEGIN
    IF migrate_applied('shop', '0042_orders_amount_cents') THEN
        RAISE NOTICE 'already applied: nothing to do';
        RETURN;
    END IF;
    run := migrate_start('shop', '0042_orders_amount_cents',
                         checksum => md5('ALTER TABLE orders ADD COLUMN amount_cents bigint'),
                         description => 'expand: nullable amount_cents, backfilled later');
    ALTER TABLE orders ADD COLUMN IF NOT EXISTS amount_cents bigint;
    PERFORM migrate_finish(run);
    RAISE NOTICE 'applied as run %', run;
END $$;
SQL
echo "    The application's startup check for a migration that is there ..."
"${PSQL[@]}" -d "$DB" -qc "SELECT migrate_require('shop', '0042_orders_amount_cents')" >/dev/null && echo "    ok"
echo "    ... and for one that is not (the app refuses to start, and says why):"
"${PSQL[@]}" -d "$DB" -qc "SELECT migrate_require('shop', '0043_orders_status_index')" 2>&1 | sed 's/^/    /' || true


echo
echo "==> 2. a chunked backfill by a background worker"
echo "    Fill orders.amount_cents on all rows, in batches that each commit with the job's cursor,"
echo "    linked to migration shop.0043_backfill_amount_cents (applied when the job succeeds):"
job=$("${PSQL[@]}" -d "$DB" -tAc "
    SELECT CASE WHEN migrate_applied('shop', '0043_backfill_amount_cents') THEN NULL
                ELSE migrate_backfill('orders', 'amount_cents = (amount * 100)::bigint', 'amount_cents IS NULL',
                                      migration => ARRAY['shop', '0043_backfill_amount_cents']) END")
if [ -n "$job" ]; then
    echo "    SELECT migrate_backfill(...) returned job $job at once; CALL migrate_wait($job) follows it:"
    "${PSQL[@]}" -d "$DB" -qc "CALL migrate_wait($job)" 2>&1 | sed 's/^/    /'
else
    echo "    already applied in an earlier run: nothing to do"
fi
"${PSQL[@]}" -d "$DB" -c "SELECT job_id, relation, state, rows_done, rows_total, percent, rows_per_second, batch_size,
                                 last_batch_ms, finished_at - started_at AS took, migration
                            FROM migrate_progress ORDER BY job_id DESC LIMIT 1"
"${PSQL[@]}" -d "$DB" -tAc "SELECT format('    check: %s of %s orders have amount_cents = amount * 100',
                                          count(*) FILTER (WHERE amount_cents = (amount * 100)::bigint), count(*))
                              FROM orders"

echo
echo "==> 3. an index built concurrently by a background worker"
echo "    CREATE INDEX on all 1,000,000 orders without blocking writes: pg_migrate adds CONCURRENTLY,"
echo "    checks the statement now, and a worker runs it (linked to migration shop.0044_orders_customer_index):"
job=$("${PSQL[@]}" -d "$DB" -tAc "
    SELECT CASE WHEN migrate_applied('shop', '0044_orders_customer_index') THEN NULL
                ELSE migrate_create_index('CREATE INDEX ON orders (customer_id, created_at)',
                                          migration => ARRAY['shop', '0044_orders_customer_index']) END")
if [ -n "$job" ]; then
    echo "    SELECT migrate_create_index(...) returned job $job; CALL migrate_wait($job) follows it:"
    "${PSQL[@]}" -d "$DB" -qc "CALL migrate_wait($job)" 2>&1 | sed 's/^/    /'
else
    echo "    already applied in an earlier run: nothing to do"
fi
"${PSQL[@]}" -d "$DB" -c "SELECT job_id, attempt, index_name, outcome, duration, size, statement
                            FROM migrate_index_builds ORDER BY job_id DESC, attempt DESC LIMIT 1"

echo
echo "==> 4. lock risk: analyse a migration script, then run its DDL the safe way"
echo "    migrate_analyze reads the script with PostgreSQL's parser and the live catalog; nothing runs:"
"${PSQL[@]}" -d "$DB" -c "SELECT statement, relation, lock_mode, rewrites, scans, estimated_duration, risk, left(reason, 70) AS reason
                            FROM migrate_analyze(\$\$
                                ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();
                                ALTER TABLE orders ALTER COLUMN note SET NOT NULL;
                                ALTER TABLE orders ADD COLUMN shipped_at timestamptz;
                            \$\$)"
echo "    The recipe for statement 1 (add the column plain, default for new rows, backfill the old ones):"
"${PSQL[@]}" -d "$DB" -tAc "SELECT recipe FROM migrate_analyze('ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid()')" | sed 's/^/    /'
echo "    Statement 3 is safe but takes ACCESS EXCLUSIVE: migrate_exec runs it with a short lock_timeout,"
echo "    retrying while a report's transaction holds the table (it ends after 3 s), so no queue forms:"
if [ "$("${PSQL[@]}" -d "$DB" -tAc "SELECT migrate_applied('shop', '0045_orders_shipped_at')")" = t ]; then
    echo "    already applied in an earlier run; its attempts were:"
else
    "${PSQL[@]}" -d "$DB" -qc "SET application_name = 'nightly_report'" \
        -c "BEGIN; SELECT count(*) FROM orders; SELECT pg_sleep(3); COMMIT" >/dev/null &
    sleep 0.5
    "${PSQL[@]}" -d "$DB" -qc "CALL migrate_exec('ALTER TABLE orders ADD COLUMN IF NOT EXISTS shipped_at timestamptz',
                                                 lock_timeout => '300ms', retry_delay => '500ms',
                                                 migration => ARRAY['shop', '0045_orders_shipped_at'])" 2>&1 | sed 's/^/    /'
    wait
fi
"${PSQL[@]}" -d "$DB" -c "SELECT exec_id, attempt, outcome, round(extract(epoch FROM duration) * 1000) AS ms, blockers
                            FROM migrate_exec_log WHERE exec_id = (SELECT max(exec_id) FROM migrate_exec_log) ORDER BY attempt"

echo
echo "==> 5. a key's type changed under a live writer: customers.id integer -> bigint"
echo "    customers (50,000 rows, integer key) is referenced by orders.customer_id; a foreign key is added"
echo "    without blocking writes (NOT VALID, then validated), then the key becomes bigint while a writer"
echo "    adds a customer and an order every 10 ms:"
"${PSQL[@]}" -d "$DB" -q -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS customers (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 50000) g
 WHERE NOT EXISTS (SELECT 1 FROM customers);
SQL
# Done in an earlier run (the history says so, or, when the extension was
# recreated since, the column does).
if [ "$("${PSQL[@]}" -d "$DB" -tAc "SELECT migrate_applied('shop', '0047_customers_id_bigint')
                                           OR format_type(atttypid, atttypmod) = 'bigint'
                                      FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attname = 'id'")" = t ]; then
    echo "    already applied in an earlier run:"
else
    fk=$("${PSQL[@]}" -d "$DB" -tAc "SELECT migrate_add_constraint('orders', 'CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)')
                                      WHERE NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'orders_customer_fk')")
    [ -n "$fk" ] && "${PSQL[@]}" -d "$DB" -qc "CALL migrate_wait($fk)" 2>&1 | sed 's/^/    /'
    job=$("${PSQL[@]}" -d "$DB" -tAc "SELECT migrate_alter_type('customers', 'id', 'bigint',
                                                                migration => ARRAY['shop', '0047_customers_id_bigint'])")
    echo "    SELECT migrate_alter_type('customers', 'id', 'bigint') returned job $job; the writer runs until it is done:"
    "${PSQL[@]}" -d "$DB" -q 2>&1 <<SQL | sed 's/^/    /'
DO \$w\$
DECLARE
    n int := 0; worst interval := '0'; t timestamptz; cid bigint;
BEGIN
    LOOP
        t := clock_timestamp();
        INSERT INTO customers (name) VALUES ('walk-in') RETURNING id INTO cid;
        INSERT INTO orders (customer_id, status, amount, created_at) VALUES (cid, 'new', 9.99, now());
        COMMIT;
        worst := greatest(worst, clock_timestamp() - t);
        n := n + 1;
        EXIT WHEN (SELECT state FROM pgmigrate.jobs WHERE job_id = $job) IN ('succeeded', 'failed', 'cancelled');
        PERFORM pg_sleep(0.01);
    END LOOP;
    RAISE NOTICE 'writer: % customers and orders added while the job ran, none failed; slowest write % ms',
        n, round(extract(epoch FROM worst) * 1000, 1);
END
\$w\$;
SQL
    "${PSQL[@]}" -d "$DB" -qc "CALL migrate_wait($job)" 2>&1 | sed 's/^/    /'
    "${PSQL[@]}" -d "$DB" -c "SELECT job_id, kind, state, finished_at - started_at AS took FROM migrate_progress
                                WHERE job_id >= $job ORDER BY job_id"
fi
"${PSQL[@]}" -d "$DB" -tAc "SELECT format('    customers.id is %s; %s; orders_customer_fk validated: %s',
                                          format_type(a.atttypid, a.atttypmod),
                                          (SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'customers'::regclass AND contype = 'p'),
                                          (SELECT convalidated FROM pg_constraint WHERE conname = 'orders_customer_fk'))
                              FROM pg_attribute a WHERE a.attrelid = 'customers'::regclass AND a.attname = 'id'"

echo
"${PSQL[@]}" -d "$DB" -c "SELECT app, name, status, duration, applied_by, run_id FROM migrate_history ORDER BY app, name"
"${PSQL[@]}" -d "$DB" -c "SELECT * FROM migrate_status ORDER BY app"

cat <<EOF

pg_migrate is running on a local server with the demo database.
  connect:  psql -h 127.0.0.1 -p $PORT -U postgres $DB
  then try: SELECT * FROM migrate_history;
            SELECT migrate_require('shop', '0042_orders_amount_cents');
            SELECT migrate_backfill('orders', 'note = upper(note)', 'note IS NOT NULL', sleep_ms => 50);
            SELECT migrate_reindex('orders_customer_id_created_at_idx', schedule => '0 3 * * 0');
            SELECT * FROM migrate_progress \watch 1
            SELECT * FROM migrate_analyze('ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,2)');
  stop:     make demo-stop      (make demo starts it again; data stays in $DIR/)
EOF
