#!/usr/bin/env bash
# Backfill throughput on a 10,000,000-row table: migrate_backfill through a
# background worker (defaults: adaptive batches) against a single UPDATE and
# a PL/pgSQL keyset loop committing every 10,000 rows, each on an identical
# vacuumed copy.  Also: the worker's memory at 1M and 10M rows, and
# migrate_estimate's forecast against the real run.
set -euo pipefail
ROWS=${BACKFILL_ROWS:-10000000}
SMALL=${BACKFILL_SMALL_ROWS:-1000000}
DB=bench_backfill
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
. "$(dirname "$0")/lib/orders.sh"
$PSQL -d $DB -c "CREATE EXTENSION pg_migrate" -c "CREATE TABLE timings (what text, seconds float8)" >/dev/null
for t in orders_single orders_loop orders_loops2 orders_job orders_job_where orders_parallel; do make_table $t "$ROWS"; done
make_table orders_small "$SMALL"
$PSQL -d $DB -c "CHECKPOINT" >/dev/null

timed() {   # timed LABEL psql-args...
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    $PSQL -d $DB -v ON_ERROR_STOP=1 "$@" >/dev/null
    t1=$(date +%s.%N)
    $PSQL -d $DB -c "INSERT INTO timings VALUES ('$label', $t1 - $t0)" >/dev/null
    $PSQL -d $DB -c "CHECKPOINT" >/dev/null
}

# Peak private memory (RssAnon: not shared buffers) of a job's worker.
watch_worker() {   # watch_worker JOB OUTFILE: samples until the job's worker is gone
    local job=$1 out=$2 pid="" peak=0 v
    for _ in $(seq 1 200); do
        pid=$($PSQL -d $DB -tAc "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_migrate job $job'")
        [ -n "$pid" ] && break
        sleep 0.05
    done
    while [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; do
        v=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ "${v:-0}" -gt "$peak" ] && peak=$v
        $PSQL -d $DB -tAc "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg_migrate job $job'" | grep -q 1 || break
        sleep 0.1
    done
    echo "$peak" > "$out"
}

run_job() {   # run_job TABLE LABEL [WHERE [OPTIONS]]: submit, follow, time from submit to finish
    local job where=${3:-} opts=${4:-}
    job=$($PSQL -d $DB -tAc "SELECT migrate_backfill('$1', 'amount_cents = (amount * 100)::bigint'${where:+, '$where'}$opts)")
    watch_worker "$job" "/tmp/pgm_rss_$2" &
    $PSQL -d $DB -c "SET client_min_messages = warning" -c "CALL migrate_wait($job)" >/dev/null
    wait
    $PSQL -d $DB -c "INSERT INTO timings SELECT '$2', extract(epoch FROM finished_at - created_at) FROM pgmigrate.jobs WHERE job_id = $job" >/dev/null
    $PSQL -d $DB -c "CHECKPOINT" >/dev/null
    echo "$job"
}

estimate=$($PSQL -d $DB -tA -F'|' -c "SELECT rows_to_update, extract(epoch FROM estimated_duration), estimated_wal_bytes
                                      FROM migrate_estimate('orders_job', 'amount_cents = (amount * 100)::bigint')")

timed single -c "UPDATE orders_single SET amount_cents = (amount * 100)::bigint"
timed loop <<'SQL'
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
# Two such loops at once, each on its half of the key range (what
# parallel => 2 does by hand): the ceiling two sessions reach here.
half_loop() {   # half_loop FROM TO
    $PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$
DECLARE last bigint := $1; upto bigint;
BEGIN
    LOOP
        SELECT max(id) INTO upto FROM (SELECT id FROM orders_loops2 WHERE id > last AND id <= $2 ORDER BY id LIMIT 10000) s;
        EXIT WHEN upto IS NULL;
        UPDATE orders_loops2 SET amount_cents = (amount * 100)::bigint WHERE id > last AND id <= upto;
        last := upto;
        COMMIT;
    END LOOP;
END \$\$;
SQL
}
t0=$(date +%s.%N)
half_loop 0 $((ROWS / 2)) & half_loop $((ROWS / 2)) "$ROWS" & wait
t1=$(date +%s.%N)
$PSQL -d $DB -c "INSERT INTO timings VALUES ('loops2', $t1 - $t0)" -c "CHECKPOINT" >/dev/null
job=$(run_job orders_job job)
run_job orders_job_where job_where "amount_cents IS NULL" >/dev/null
small=$(run_job orders_small job_small)
# The parallel run with a writer: pgbench updates random rows of the table
# (2 clients, 100/s in all) from before the job starts until after it ends.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
. "$(dirname "$0")/lib/latency.sh"
cat > "$WORK/w.sql" <<SQL
\set id random(1, $ROWS)
UPDATE orders_parallel SET note = 'w' WHERE id = :id;
SQL
(cd "$WORK" && /usr/lib/postgresql/15/bin/pgbench -n -c 2 -j 1 -R 100 -T 70 -h 127.0.0.1 -p "$BENCH_PORT" -U postgres \
    -f "$WORK/w.sql" -l --log-prefix=par "$DB" >/dev/null 2>&1) &
wpid=$!
sleep 2
pjob=$(run_job orders_parallel job_parallel "" ", parallel => 2")   # (its wait outlasts the writer)
wait "$wpid" || true
read -r p0 p1 < <($PSQL -d $DB -tA -F' ' -c "SELECT extract(epoch FROM created_at), extract(epoch FROM finished_at)
                                              FROM pgmigrate.jobs WHERE job_id = $pjob")
latencies par "$p0" "$p1" > "$WORK/par.lat"
w_n=$(wc -l < "$WORK/par.lat"); w_p50=$(pct 50 < "$WORK/par.lat"); w_p99=$(pct 99 < "$WORK/par.lat"); w_max=$(tail -n1 "$WORK/par.lat")

check=$($PSQL -d $DB -tAc "SELECT (SELECT count(*) FROM orders_job WHERE amount_cents = (amount * 100)::bigint) = $ROWS
                            AND (SELECT count(*) FROM orders_parallel WHERE amount_cents = (amount * 100)::bigint) = $ROWS
                            AND (SELECT count(*) FROM orders_single WHERE amount_cents IS NULL) = 0
                            AND (SELECT count(*) FROM orders_loop WHERE amount_cents IS NULL) = 0
                            AND (SELECT count(*) FROM orders_loops2 WHERE amount_cents IS NULL) = 0")
[ "$check" = t ] || { echo "backfill result check failed" >&2; exit 1; }
read -r batches max_batch avg_ms wal_real < <($PSQL -d $DB -tA -F' ' -c "
    SELECT batches, (SELECT max(batch_size) FROM pgmigrate.batches WHERE job_id = $job),
           (SELECT round(avg(ms)) FROM pgmigrate.batches WHERE job_id = $job AND batch_no > 10),
           (SELECT sum(wal_bytes) FROM pgmigrate.batches WHERE job_id = $job)
      FROM pgmigrate.jobs WHERE job_id = $job")
IFS='|' read -r est_rows est_secs est_wal <<< "$estimate"
job_secs=$($PSQL -d $DB -tAc "SELECT round(seconds::numeric, 2) FROM timings WHERE what = 'job'")
rss_big=$(cat /tmp/pgm_rss_job); rss_small=$(cat /tmp/pgm_rss_job_small)
fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

echo "## Backfill throughput"
echo
echo "\`SET amount_cents = (amount * 100)::bigint\` on $(fmt "$ROWS") rows (bigint identity key, numeric,"
echo "text, new nullable bigint column): the same statement for every contender, each on its own identical"
echo "vacuumed copy, a checkpoint between runs. migrate_backfill runs through a background worker with its"
echo "defaults: adaptive batches aimed at 200 ms ($batches batches, up to $(fmt "$max_batch") rows; batches after the"
echo "tenth averaged $avg_ms ms), each committed with the job's cursor; its time is from submit to finish."
echo
echo "| how | seconds | rows/s | migrate_backfill vs this |"
echo "|---|---:|---:|---:|"
$PSQL -d $DB -tA <<SQL
SELECT format('| %s | %s | %s | %s |',
              CASE what WHEN 'single' THEN 'single UPDATE of the whole table (baseline)'
                        WHEN 'loop' THEN 'PL/pgSQL keyset loop, COMMIT every 10,000 rows (baseline)'
                        WHEN 'job_where' THEN 'migrate_backfill with where_clause ''amount_cents IS NULL'' (informative)'
                        ELSE 'migrate_backfill (worker)' END,
              round(seconds::numeric, 2), round($ROWS / seconds),
              CASE WHEN what IN ('job', 'job_where') THEN '-'
                   ELSE round((seconds / (SELECT seconds FROM timings WHERE what = 'job'))::numeric, 2) || 'x' ||
                        CASE WHEN what = 'single' THEN
                             CASE WHEN seconds / (SELECT seconds FROM timings WHERE what = 'job') >= 0.9
                                  THEN ' (target >= 0.9x: met)' ELSE ' (target >= 0.9x: MISSED)' END
                             ELSE CASE WHEN seconds / (SELECT seconds FROM timings WHERE what = 'job') >= 1.0
                                  THEN ' (target >= 1.0x: met)' ELSE ' (target >= 1.0x: MISSED)' END END END)
  FROM timings WHERE what IN ('single', 'loop', 'job', 'job_where')
 ORDER BY CASE what WHEN 'single' THEN 1 WHEN 'loop' THEN 2 WHEN 'job' THEN 3 ELSE 4 END;
SQL
read -r single_s job_s par_s loops2_s < <($PSQL -d $DB -tA -F' ' -c "
    SELECT round(max(seconds) FILTER (WHERE what = 'single')::numeric, 2), round(max(seconds) FILTER (WHERE what = 'job')::numeric, 2),
           round(max(seconds) FILTER (WHERE what = 'job_parallel')::numeric, 2),
           round(max(seconds) FILTER (WHERE what = 'loops2')::numeric, 2) FROM timings")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t ? "met" : "MISSED") }'; }
echo
echo '**Parallel:** `migrate_backfill(..., parallel => 2)`'" on another identical copy: $par_s s, two slices of the"
echo "key range in two workers at once: $(ratio "$single_s" "$par_s")x the single UPDATE (target >= 1.6x:"
echo "$(verdict "$(ratio "$single_s" "$par_s")" 1.6)). The default migrate_backfill: $(ratio "$single_s" "$job_s")x the single UPDATE"
echo "(target >= 0.95x: $(verdict "$(ratio "$single_s" "$job_s")" 0.95)). For the ceiling, two PL/pgSQL keyset loops at"
echo "once, each on its half of the key range of another copy (COMMIT every 10,000 rows): $loops2_s s,"
echo "$(ratio "$single_s" "$loops2_s")x the single UPDATE."
echo
echo "**A writer during the parallel run:** pgbench updated random rows of the same table (2 clients,"
echo "100/s in all): $w_n writes ended while the job ran, p50 $w_p50 ms, p99 $w_p99 ms, max ${w_max:-n/a} ms; the"
echo "batch target is 200 ms (target: p99 within 2x of it, <= 400 ms: $(awk -v a="$w_p99" 'BEGIN { print (a + 0 <= 400 ? "met" : "MISSED") }'))."
echo
echo "**Worker memory** (peak RssAnon, the worker's private memory, shared buffers excluded, sampled"
echo "every 100 ms): $(fmt "$rss_small") kB on $(fmt "$SMALL") rows, $(fmt "$rss_big") kB on $(fmt "$ROWS") rows."
echo
echo "**migrate_estimate before the run** (10 sample ranges of 1,000 rows, rolled back) against the real run:"
echo
echo "| | estimated | real |"
echo "|---|---:|---:|"
echo "| rows to update | $(fmt "$est_rows") | $(fmt "$ROWS") |"
echo "| duration | $(printf '%.1f' "$est_secs") s | $job_secs s |"
echo "| WAL | $($PSQL -d $DB -tAc "SELECT pg_size_pretty($est_wal::bigint)") | $($PSQL -d $DB -tAc "SELECT pg_size_pretty($wal_real::bigint)") |"
