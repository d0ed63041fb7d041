#!/usr/bin/env bash
# Small and medium backfills: migrate_backfill with its defaults (adaptive
# batches from a small first batch) against a single UPDATE, on 100,000 and
# 1,000,000 rows.  Each contender runs three times, each time on its own
# identical vacuumed copy, alternating; the median counts.  The UPDATE is
# timed inside the server (no connection set-up); the job from its submit
# to its finish, as the DBA waits for it.
set -euo pipefail
SIZES=${SMALL_JOB_SIZES:-100000 1000000}
REPS=3
DB=bench_small_jobs
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
. "$(dirname "$0")/lib/orders.sh"
$PSQL -d $DB -c "CREATE EXTENSION pg_migrate" -c "CREATE TABLE timings (rows bigint, what text, seconds float8)" >/dev/null
for n in $SIZES; do
    for r in $(seq 1 $REPS); do make_table "single_${n}_$r" "$n"; make_table "job_${n}_$r" "$n"; done
done
$PSQL -d $DB -c "CHECKPOINT" >/dev/null

for n in $SIZES; do
    for r in $(seq 1 $REPS); do
        $PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT clock_timestamp() AS t0 \gset
UPDATE single_${n}_$r SET $SET_CENTS;
INSERT INTO timings VALUES ($n, 'single', extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));
CHECKPOINT;
SQL
        job=$($PSQL -d $DB -tAc "SELECT migrate_backfill('job_${n}_$r', '$SET_CENTS')")
        $PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
CALL migrate_wait($job);
INSERT INTO timings SELECT $n, 'job', extract(epoch FROM finished_at - created_at)
  FROM pgmigrate.jobs WHERE job_id = $job AND state = 'succeeded';
CHECKPOINT;
SQL
        [ "$($PSQL -d $DB -tAc "SELECT count(*) FROM job_${n}_$r WHERE amount_cents IS DISTINCT FROM (amount * 100)::bigint")" = 0 ] \
            || { echo "job_${n}_$r: rows left" >&2; exit 1; }
    done
done

echo "## Small and medium backfills"
echo
echo "\`SET $SET_CENTS\` (the table of the throughput benchmark) by migrate_backfill with its defaults,"
echo "from submit to finish, against a single UPDATE timed inside the server. Median of $REPS runs each,"
echo "every run on its own identical vacuumed copy, a checkpoint after each."
echo
echo "| rows | single UPDATE (baseline) | migrate_backfill | batches | single / migrate_backfill |"
echo "|---:|---:|---:|---:|---:|"
$PSQL -d $DB -tA <<SQL
WITH m AS (
    SELECT rows, what, percentile_disc(0.5) WITHIN GROUP (ORDER BY seconds) AS s,
           string_agg(round(seconds::numeric, 3)::text, ', ' ORDER BY seconds) AS all_s
      FROM timings GROUP BY rows, what)
SELECT format('| %s | %s s (%s) | %s s (%s) | %s | %sx (target >= 0.9x: %s) |',
              to_char(s.rows, 'FM9,999,999,999'), round(s.s::numeric, 3), s.all_s, round(j.s::numeric, 3), j.all_s,
              (SELECT string_agg(DISTINCT batches::text, '/') FROM pgmigrate.jobs WHERE relation LIKE '%job\_' || s.rows || '\_%'),
              round((s.s / j.s)::numeric, 2), CASE WHEN s.s / j.s >= 0.9 THEN 'met' ELSE 'MISSED' END)
  FROM m s JOIN m j ON j.rows = s.rows AND j.what = 'job'
 WHERE s.what = 'single' ORDER BY s.rows;
SQL
