#!/usr/bin/env bash
# migrate_analyze at application startup or in CI: a 20-statement migration
# script analysed inside the server, against running the same script for
# real in a rolled-back subtransaction (migrate_trace) as the baseline.
# Target: well under 50 ms per script.  Also: the duration estimates of a
# rewrite and a scan on a 2,000,000-row table against the real statements.
set -euo pipefail
CALLS=${ANALYZE_CALLS:-300}
ROWS=${ANALYZE_ROWS:-2000000}
$PSQL -d postgres -c "DROP DATABASE IF EXISTS bench_analyze" >/dev/null 2>&1 || true
$PSQL -d postgres -c "CREATE DATABASE bench_analyze" >/dev/null
$PSQL -d bench_analyze -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_migrate;
CREATE TABLE customers (id bigint PRIMARY KEY, email text, country text, created date);
INSERT INTO customers SELECT g, 'c' || g, 'c' || g % 50, date '2020-01-01' + g % 1000 FROM generate_series(1, 100000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers (id), amount numeric(12,2),
                     status varchar(20), note text, created timestamptz);
INSERT INTO orders SELECT g, 1 + g % 100000, g / 7.0, 'new', NULL, now() FROM generate_series(1, 200000) g;
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE events (id bigint, at date, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE VIEW order_totals AS SELECT customer_id, sum(amount) FROM orders GROUP BY customer_id;
CREATE TABLE big (id bigint PRIMARY KEY, n int, w text);
INSERT INTO big SELECT g, g, 'w' || g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE;
CREATE TABLE samples (kind text, ms double precision);
CREATE TABLE script (sql text);
INSERT INTO script VALUES (\$s\$
ALTER TABLE orders ADD COLUMN paid_at timestamptz;
ALTER TABLE orders ADD COLUMN currency text NOT NULL DEFAULT 'EUR';
ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();
ALTER TABLE orders ALTER COLUMN status TYPE varchar(40);
ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,2);
ALTER TABLE orders ALTER COLUMN customer_id SET NOT NULL;
ALTER TABLE orders ADD CONSTRAINT orders_amount_pos CHECK (amount >= 0) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_amount_pos;
CREATE INDEX orders_created_idx ON orders (created);
CREATE INDEX orders_status_idx ON orders (status) WHERE status <> 'done';
ALTER TABLE customers ADD COLUMN vip boolean DEFAULT false;
ALTER TABLE customers ALTER COLUMN email SET NOT NULL;
CREATE TABLE refunds (id bigint PRIMARY KEY, order_id bigint REFERENCES orders (id), amount numeric(12,2));
CREATE INDEX refunds_order_idx ON refunds (order_id);
ALTER TABLE events ADD COLUMN source text;
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
CREATE OR REPLACE VIEW order_totals AS SELECT customer_id, sum(amount) FROM orders GROUP BY customer_id;
COMMENT ON COLUMN orders.note IS 'free text';
UPDATE orders SET status = 'done' WHERE id < 100;
DROP INDEX orders_customer_idx
\$s\$);
CREATE PROCEDURE measure(kind text, n int) LANGUAGE plpgsql AS \$\$
DECLARE s text; t0 timestamptz; d double precision[] := '{}';
BEGIN
    SELECT sql INTO s FROM script;
    FOR i IN 1..n LOOP
        t0 := clock_timestamp();
        IF kind = 'migrate_analyze' THEN
            PERFORM * FROM migrate_analyze(s);
        ELSE
            PERFORM * FROM migrate_trace(s, lock_timeout => '5s', statement_timeout => '60s');
        END IF;
        d := d || extract(epoch FROM clock_timestamp() - t0)::double precision * 1000;
        COMMIT;
    END LOOP;
    INSERT INTO samples SELECT kind, unnest(d);
END \$\$;
SQL
statements=$($PSQL -d bench_analyze -tA -c "SELECT count(DISTINCT statement) FROM script, migrate_analyze(sql)")
$PSQL -d bench_analyze -c "CALL measure('migrate_analyze', 20)" >/dev/null   # warm up
$PSQL -d bench_analyze -c "DELETE FROM samples" -c "CALL measure('migrate_analyze', $CALLS)" >/dev/null
$PSQL -d bench_analyze -c "CALL measure('migrate_trace', $((CALLS / 10)))" >/dev/null

# Estimates against the real statements on the big table.
est() {
    $PSQL -d bench_analyze -tA -c "SELECT round(extract(epoch FROM estimated_duration)::numeric, 1), table_bytes
                                     FROM migrate_analyze('$1') WHERE relation = 'big'::regclass"
}
real_ms() {
    $PSQL -d bench_analyze -tA -c "CHECKPOINT" >/dev/null
    $PSQL -d bench_analyze -tA -c "\\timing on" -c "$1" | awk '/^Time:/ {print $2}'
}
rewrite_sql="ALTER TABLE big ALTER COLUMN n TYPE bigint"
scan_sql="ALTER TABLE big ALTER COLUMN w SET NOT NULL"
rewrite_est=$(est "$rewrite_sql"); scan_est=$(est "$scan_sql")
bytes=${rewrite_est#*|}
index_bytes=$($PSQL -d bench_analyze -tA -c "SELECT pg_indexes_size('big')")
rewrite_real=$(real_ms "$rewrite_sql"); scan_real=$(real_ms "$scan_sql")

echo "## migrate_analyze: a 20-statement script"
echo
echo "A $statements-statement migration script (ADD COLUMN with and without volatile defaults, type changes,"
echo "SET NOT NULL, CHECK NOT VALID and VALIDATE, CREATE INDEX, a new table with a foreign key, a new partition,"
echo "CREATE OR REPLACE VIEW, COMMENT, UPDATE, DROP INDEX) over tables of 100,000 and 200,000 rows and a"
echo "partitioned table. Each call timed inside the server (PL/pgSQL loop, clock_timestamp() around each call,"
echo "its own transaction). Baseline: the same script through migrate_trace, which runs every statement for"
echo "real in a subtransaction that is rolled back."
echo
echo "| call | calls | p50 ms | p95 ms | p99 ms | max ms | target: well under 50 ms |"
echo "|---|---:|---:|---:|---:|---:|---|"
$PSQL -d bench_analyze -tA <<'SQL'
SELECT format('| %s | %s | %s | %s | %s | %s | %s |', kind, count(*),
              round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 2),
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
              round(max(ms)::numeric, 2),
              CASE WHEN kind = 'migrate_trace' THEN '(baseline)'
                   WHEN percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) < 50 THEN 'met (p99)'
                   ELSE 'NOT met' END)
  FROM samples GROUP BY kind ORDER BY kind;
SQL
echo
echo "**Duration estimates** against the real statements on a $ROWS-row table"
echo "($((bytes / 1024 / 1024)) MB heap, $((index_bytes / 1024 / 1024)) MB of indexes; defaults"
echo "\`pg_migrate.rewrite_rate\` $($PSQL -d bench_analyze -tA -c "SHOW pg_migrate.rewrite_rate") MB/s and"
echo "\`pg_migrate.scan_rate\` $($PSQL -d bench_analyze -tA -c "SHOW pg_migrate.scan_rate") MB/s):"
echo
echo "| statement | estimated s | real s | this machine's rate |"
echo "|---|---:|---:|---:|"
awk -v e="${rewrite_est%|*}" -v r="$rewrite_real" -v b="$bytes" -v i="$index_bytes" -v s="$rewrite_sql" \
    'BEGIN { printf "| `%s` (rewrite) | %.1f | %.1f | %.0f MB/s |\n", s, e, r/1000, (b+i)/1048576/(r/1000) }'
awk -v e="${scan_est%|*}" -v r="$scan_real" -v b="$bytes" -v s="$scan_sql" \
    'BEGIN { printf "| `%s` (scan) | %.1f | %.1f | %.0f MB/s |\n", s, e, r/1000, b/1048576/(r/1000) }'
