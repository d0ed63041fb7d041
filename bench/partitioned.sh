#!/usr/bin/env bash
# A partitioned table two levels deep (10 ranges of dates, each in 4 hash
# partitions: 40 leaves) under a live writer: migrate_create_index, with the
# longest lock on any leaf above SHARE UPDATE EXCLUSIVE sampled, against a
# plain CREATE INDEX (baseline); the same build with kill -9 of its worker
# half-way (no leaf built twice); a backfill `n = n + 1` with and without
# parallel, each across a kill -9 (every row updated exactly once).
set -euo pipefail
ROWS=${PART_ROWS:-5000000}
DB=bench_partitioned
WORK=$(mktemp -d)
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
. "$(dirname "$0")/lib/latency.sh"
$PSQL -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
{
    echo "CREATE TABLE ev (id bigint NOT NULL, at date NOT NULL, n int NOT NULL DEFAULT 0, v int, note text,
                           PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
    for y in $(seq 0 9); do
        echo "CREATE TABLE ev_$y PARTITION OF ev FOR VALUES FROM ('2020-01-01'::date + $((y * 365)))
                  TO ('2020-01-01'::date + $(((y + 1) * 365))) PARTITION BY HASH (id);"
        for h in 0 1 2 3; do
            echo "CREATE TABLE ev_${y}_$h PARTITION OF ev_$y FOR VALUES WITH (MODULUS 4, REMAINDER $h);"
        done
    done
    echo "INSERT INTO ev (id, at, v) SELECT g, '2020-01-01'::date + (g % 3650)::int, g % 1000 FROM generate_series(1, $ROWS) g;"
    echo "VACUUM ANALYZE ev;"
} | $PSQL -d $DB -v ON_ERROR_STOP=1 >/dev/null
$PSQL -d $DB -c "CREATE EXTENSION pg_migrate" -c "CHECKPOINT" >/dev/null
leaves=$($PSQL -d $DB -tAc "SELECT count(*) FROM pg_partition_tree('ev') WHERE isleaf")

writer() {   # writer SECONDS PREFIX: single-row updates by key, 100/s, 2 clients
    cat > "$WORK/w.sql" <<SQL
\set id random(1, $ROWS)
UPDATE ev SET note = 'w' WHERE id = :id AND at = '2020-01-01'::date + (:id % 3650)::int;
SQL
    (cd "$WORK" && $PGBENCH -n -c 2 -j 1 -R 100 -T "$1" -h 127.0.0.1 -p "$BENCH_PORT" -U postgres \
        -f "$WORK/w.sql" -l --log-prefix="$2" "$DB" >/dev/null 2>&1) || true
}
# Locks above SHARE UPDATE EXCLUSIVE on a leaf, sampled every 100 ms until
# $WORK/stop exists: "epoch relation mode pid" lines.
sample_locks() {   # sample_locks OUT
    while [ ! -e "$WORK/stop" ]; do
        $PSQL -d $DB -tA -F' ' -c "SELECT extract(epoch FROM clock_timestamp()), l.relation::regclass, l.mode, l.pid
              FROM pg_locks l JOIN pg_partition_tree('ev') t ON t.relid = l.relation AND t.isleaf
             WHERE l.granted AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')" \
            >> "$1" 2>/dev/null || true
        sleep 0.1
    done
}
# The longest run of consecutive samples of one (relation, mode, pid), in
# seconds, and what it was.
longest_hold() {   # longest_hold FILE
    sort -k2,2 -k3,3 -k4,4 -k1,1n "$1" | awk '
        { key = $2 " " $3 " pid " $4
          if (key == k && $1 - last < 0.35) { last = $1 } else { k = key; first = $1; last = $1 }
          if (last - first > best) { best = last - first; what = key } }
        END { if (what == "") print "0 none"; else printf "%.1f %s\n", best, what }'
}
job_wait() {   # job_wait JOB: until it ends, across a restart
    for _ in $(seq 1 3600); do
        s=$($PSQL -d $DB -tAc "SELECT state FROM pgmigrate.jobs WHERE job_id = $1" 2>/dev/null || echo down)
        case "$s" in succeeded) return 0 ;; failed|cancelled) echo "job $1 $s" >&2; return 1 ;; esac
        sleep 0.2
    done
    echo "job $1 did not end" >&2; return 1
}
kill9_worker() {   # kill9_worker JOB: kill -9 its worker (its own or a slice's), then wait for the server
    local pid
    pid=$($PSQL -d $DB -tAc "SELECT worker_pid FROM migrate_progress WHERE (job_id = $1 OR parent_job = $1) AND worker_pid IS NOT NULL LIMIT 1")
    kill -9 "$pid"
    sleep 1
    for _ in $(seq 1 600); do
        $PSQL -d $DB -tAc "SELECT 1" >/dev/null 2>&1 && \
            [ "$($PSQL -d $DB -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_migrate launcher'" 2>/dev/null || echo 0)" -ge 1 ] && return 0
        sleep 0.2
    done
}
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

# 1. migrate_create_index under the writer, locks sampled
WRITER=60
writer "$WRITER" job &
wpid=$!
sleep 2
: > "$WORK/locks_job"; rm -f "$WORK/stop"; sample_locks "$WORK/locks_job" & spid=$!
t0=$(date +%s.%N)
job=$($PSQL -d $DB -tAc "SELECT migrate_create_index('CREATE INDEX ev_v_idx ON ev (v)')")
job_wait "$job"
t1=$(date +%s.%N)
touch "$WORK/stop"; wait "$spid"
wait "$wpid"
latencies job "$t0" "$t1" > "$WORK/job.lat"
read -r valid builds steps < <($PSQL -d $DB -tA -F' ' -c "
    SELECT (SELECT indisvalid FROM pg_index WHERE indexrelid = 'ev_v_idx'::regclass),
           count(*) FILTER (WHERE statement LIKE 'CREATE INDEX CONCURRENTLY%'), count(*)
      FROM migrate_index_builds WHERE job_id = $job AND outcome = 'succeeded'")
read -r hold_job hold_job_what < <(longest_hold "$WORK/locks_job")

# 2. plain CREATE INDEX under the writer (baseline)
writer 40 plain &
wpid=$!
sleep 2
: > "$WORK/locks_plain"; rm -f "$WORK/stop"; sample_locks "$WORK/locks_plain" & spid=$!
s0=$(date +%s.%N)
$PSQL -d $DB -c "CREATE INDEX ev_note_idx ON ev (note)" >/dev/null
s1=$(date +%s.%N)
touch "$WORK/stop"; wait "$spid"
wait "$wpid"
latencies plain "$s0" "$(awk -v a="$s1" 'BEGIN { printf "%.6f", a + 1 }')" > "$WORK/plain.lat"
read -r hold_plain hold_plain_what < <(longest_hold "$WORK/locks_plain")

# 3. the build again, kill -9 of its worker half-way
k0=$(date +%s.%N)
kjob=$($PSQL -d $DB -tAc "SELECT migrate_create_index('CREATE INDEX ev_n_idx ON ev (n)')")
for _ in $(seq 1 3000); do
    d=$($PSQL -d $DB -tAc "SELECT coalesce(partitions_done, 0) FROM migrate_progress WHERE job_id = $kjob")
    [ "$d" -ge $((leaves / 2)) ] && break
    sleep 0.05
done
killed_at=$d
kill9_worker "$kjob"
job_wait "$kjob"
k1=$(date +%s.%N)
read -r kvalid kbuilds kinterrupted krebuilt < <($PSQL -d $DB -tA -F' ' -c "
    WITH b AS (SELECT outcome, substring(statement FROM ' ON (\S+) USING') AS leaf FROM migrate_index_builds
                WHERE job_id = $kjob AND statement LIKE 'CREATE INDEX CONCURRENTLY%')
    SELECT (SELECT indisvalid FROM pg_index WHERE indexrelid = 'ev_n_idx'::regclass),
           count(*) FILTER (WHERE outcome = 'succeeded'), count(*) FILTER (WHERE outcome = 'interrupted'),
           (SELECT count(*) FROM (SELECT leaf FROM b WHERE outcome = 'succeeded' GROUP BY leaf HAVING count(*) > 1) x)
      FROM b")

# 4. backfills n = n + 1 across kill -9: without, then with parallel
backfill() {   # backfill OPTIONS: seconds, then rows with n = expected
    local b0 b1 bjob
    b0=$(date +%s.%N)
    bjob=$($PSQL -d $DB -tAc "SELECT migrate_backfill('ev', 'n = n + 1'$1)")
    for _ in $(seq 1 6000); do
        d=$($PSQL -d $DB -tAc "SELECT coalesce(rows_done, 0) FROM migrate_progress WHERE job_id = $bjob")
        [ "$d" -ge $((ROWS / 2)) ] && break
        sleep 0.05
    done
    kill9_worker "$bjob"
    job_wait "$bjob"
    b1=$(date +%s.%N)
    echo "$(secs "$b0" "$b1") $d"
}
read -r bf_s bf_kill < <(backfill "")
once=$($PSQL -d $DB -tAc "SELECT count(*) FILTER (WHERE n = 1) FROM ev")
read -r bp_s bp_kill < <(backfill ", parallel => 2")
twice=$($PSQL -d $DB -tAc "SELECT count(*) FILTER (WHERE n = 2) FROM ev")

fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
verdict() { if [ "$1" = "$2" ]; then echo met; else echo MISSED; fi; }
under() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 <= b ? "met" : "MISSED") }'; }
row() {   # row LABEL FILE SECONDS
    local n p50 p99 max
    n=$(wc -l < "$2"); p50=$(pct 50 < "$2"); p99=$(pct 99 < "$2"); max=$(tail -n1 "$2")
    printf '| %s | %s | %s | %s | %s | %.1f |\n' "$1" "$3" "$n" "$p50" "$p99" "${max:-0}"
}
max_job=$(tail -n1 "$WORK/job.lat")
echo "## Partitioned tables"
echo
echo "A table partitioned by date into 10 ranges, each by hash of the key into 4: $leaves leaves, $(fmt "$ROWS") rows,"
echo "primary key (id, at). pgbench updates random rows by key (2 clients, 100 updates/s in all)."
echo
echo "**An index on a partitioned table** under the writer: migrate_create_index (the index ON ONLY each"
echo "partitioned table, each leaf's CONCURRENTLY, each attached), against a plain CREATE INDEX on the"
echo "same table (baseline). Writes that ended during each count; locks above SHARE UPDATE EXCLUSIVE"
echo "on any leaf were sampled every 100 ms."
echo
echo "| during | seconds | writes | p50 ms | p99 ms | max ms |"
echo "|---|---:|---:|---:|---:|---:|"
row "migrate_create_index" "$WORK/job.lat" "$(secs "$t0" "$t1")"
row "plain CREATE INDEX (baseline)" "$WORK/plain.lat" "$(secs "$s0" "$s1")"
echo
echo "- The index ends valid: $valid ($(verdict "$valid" t)); $builds leaf builds for $leaves leaves ($(verdict "$builds" "$leaves")), $steps statements in all."
echo "- Longest lock above SHARE UPDATE EXCLUSIVE on a leaf: ${hold_job} s (${hold_job_what}) during the job"
echo "  (target <= 1 s: $(under "$hold_job" 1.0)); ${hold_plain} s (${hold_plain_what}) during the plain CREATE INDEX."
echo "- Longest write during the job: ${max_job:-0} ms (target <= 1000 ms: $(under "${max_job:-0}" 1000))."
echo
echo "**kill -9 half-way:** the same build of another index, its worker killed after $killed_at of $leaves"
echo "partitions: the index ends valid: $kvalid ($(verdict "$kvalid" t)); $kbuilds successful leaf builds for $leaves leaves,"
echo "$kinterrupted leaf build(s) cut short by the kill (and built again), $krebuilt leaves built twice"
echo "($(verdict "$krebuilt" 0)); $(secs "$k0" "$k1") s from submit to finish."
echo
echo "**Backfill \`n = n + 1\`** of the whole table, its worker killed by kill -9 half-way:"
echo "without parallel $bf_s s (killed at $(fmt "$bf_kill") rows), rows updated exactly once: $(fmt "$once") of $(fmt "$ROWS")"
echo "($(verdict "$once" "$ROWS")); with \`parallel => 2\` $bp_s s (killed at $(fmt "$bp_kill") rows), rows at exactly 2:"
echo "$(fmt "$twice") of $(fmt "$ROWS") ($(verdict "$twice" "$ROWS"))."
