#!/usr/bin/env bash
# The startup check: migrate_applied / migrate_require with 10,000 history
# rows, against a Django-style lookup (django_migrations with a unique index
# on app, name) as the baseline.  Target: server-side p50 under 0.2 ms.
set -euo pipefail
CALLS=${HISTORY_CALLS:-20000}
$PSQL -d postgres -c "CREATE DATABASE bench_history" 2>/dev/null || true
$PSQL -d bench_history -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION IF NOT EXISTS pg_migrate;
-- 10,000 migrations in 20 apps, recorded through the API
SELECT count(migrate_record('app' || (i % 20), format('%s_migration_%s', lpad(i::text, 5, '0'), i)))
  FROM generate_series(1, 10000) i;
-- the baseline: the same rows in a Django-style table
CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255) NOT NULL,
                                name varchar(255) NOT NULL, applied timestamptz NOT NULL DEFAULT now(),
                                UNIQUE (app, name));
INSERT INTO django_migrations (app, name) SELECT app, name FROM migrate_history;
VACUUM ANALYZE django_migrations;
VACUUM ANALYZE pgmigrate.events;
CREATE TABLE samples (kind text, us double precision);

-- Each call timed inside the server; every variant runs as a cached SPI query.
CREATE PROCEDURE measure(kind text, n int) LANGUAGE plpgsql AS \$\$
DECLARE
    apps text[]; names text[]; k int; t0 timestamptz; ok boolean; d double precision[] := '{}';
BEGIN
    SELECT array_agg(app ORDER BY o), array_agg(name ORDER BY o) INTO apps, names
      FROM (SELECT app, name, random() o FROM migrate_history) s;
    FOR i IN 1..n LOOP
        k := 1 + (i % array_length(apps, 1));
        t0 := clock_timestamp();
        IF kind = 'migrate_applied' THEN
            SELECT migrate_applied(apps[k], names[k]) INTO ok;
        ELSIF kind = 'migrate_require' THEN
            PERFORM migrate_require(apps[k], names[k]);
        ELSE
            SELECT EXISTS (SELECT 1 FROM django_migrations WHERE app = apps[k] AND name = names[k]) INTO ok;
        END IF;
        d := d || extract(epoch FROM clock_timestamp() - t0)::double precision * 1e6;
    END LOOP;
    INSERT INTO samples SELECT kind, unnest(d);
END \$\$;
SQL
for kind in baseline migrate_applied migrate_require; do
    $PSQL -d bench_history -c "CALL measure('$kind', 1000)" >/dev/null   # warm up
    $PSQL -d bench_history -c "DELETE FROM samples WHERE kind = '$kind'; CALL measure('$kind', $CALLS)" >/dev/null
done

# Client-side, through the wire, with pgbench (1 client, prepared, 10 s).
cat > /tmp/pgm_bench_applied.sql <<'PGB'
\set i random(1, 10000)
SELECT migrate_applied('app' || (:i::int % 20), format('%s_migration_%s', lpad(:i::text, 5, '0'), :i::int));
PGB
cat > /tmp/pgm_bench_baseline.sql <<'PGB'
\set i random(1, 10000)
SELECT EXISTS (SELECT 1 FROM django_migrations WHERE app = 'app' || (:i::int % 20) AND name = format('%s_migration_%s', lpad(:i::text, 5, '0'), :i::int));
PGB
pgb() {
    /usr/lib/postgresql/15/bin/pgbench -n -M prepared -c 1 -T 10 -h 127.0.0.1 -p "$BENCH_PORT" -U postgres \
        -f "$1" bench_history 2>&1 | awk '/latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%s ms average, %.0f calls/s", lat, tps}'
}
applied_client=$(pgb /tmp/pgm_bench_applied.sql)
baseline_client=$(pgb /tmp/pgm_bench_baseline.sql)

echo "## Startup check: migrate_applied / migrate_require"
echo
echo "10,000 migrations in the history, $CALLS calls each, timed inside the server (PL/pgSQL loop,"
echo "clock_timestamp() around each call, each call a cached SPI query). Baseline: the lookup a"
echo "framework does on its own table, \`SELECT EXISTS (...)\` on a 10,000-row \`django_migrations\`"
echo "with a unique index on (app, name)."
echo
echo "| call | p50 µs | p95 µs | p99 µs | mean µs | target: p50 < 200 µs |"
echo "|---|---:|---:|---:|---:|---|"
$PSQL -d bench_history -tA <<'SQL'
SELECT format('| %s | %s | %s | %s | %s | %s |', kind,
              round(percentile_cont(0.50) WITHIN GROUP (ORDER BY us)::numeric, 1),
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY us)::numeric, 1),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY us)::numeric, 1),
              round(avg(us)::numeric, 1),
              CASE WHEN kind = 'baseline' THEN '(baseline)'
                   WHEN percentile_cont(0.50) WITHIN GROUP (ORDER BY us) < 200 THEN 'met'
                   ELSE 'MISSED' END)
  FROM samples GROUP BY kind ORDER BY kind = 'baseline' DESC, kind;
SQL
echo
echo "Through the wire (pgbench, 1 client, prepared, 10 s): migrate_applied $applied_client;"
echo "baseline $baseline_client."
