#!/usr/bin/env bash
# Backfill of a Citus distributed table (2,000,000 rows in 32 shards) on a
# coordinator and two worker nodes on this machine, each with
# shared_preload_libraries = 'citus,pg_migrate':
#   1. the single UPDATE (the baseline), on its own copy;
#   2. migrate_backfill(..., parallel => 2) on another copy (against 1);
#   3. the same on a third copy, with kill -9 of a node's process that
#      backfills a shard about half-way through the job;
#   4. the same on a fourth copy while pgbench updates random rows of it
#      through the coordinator (the writer's p99 against the batch target,
#      200 ms).
# Every row must be updated exactly once (n = n + 1 from 0).
set -euo pipefail
ROWS=${CITUS_ROWS:-2000000}
WORK=$(mktemp -d)
BASE=$(( ${BENCH_PORT:-55434} + 10 ))
PORTS=("$BASE" $(( BASE + 1 )) $(( BASE + 2 )))
DIRS=(.clusters/bench-citus0 .clusters/bench-citus1 .clusters/bench-citus2)
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
cleanup() { for d in "${DIRS[@]}"; do scripts/cluster.sh destroy "$d" >/dev/null 2>&1 || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
on() { psql -X -q -h 127.0.0.1 -p "$1" -U postgres -d app -tA -v ON_ERROR_STOP=1 "${@:2}"; }
C() { on "${PORTS[0]}" "$@"; }
for i in 0 1 2; do
    scripts/cluster.sh destroy "${DIRS[$i]}" >/dev/null 2>&1 || true
    scripts/cluster.sh start "${DIRS[$i]}" "${PORTS[$i]}" "shared_preload_libraries='citus,pg_migrate'" \
        shared_buffers=512MB max_wal_size=8GB checkpoint_timeout=30min >/dev/null
    psql -X -q -h 127.0.0.1 -p "${PORTS[$i]}" -U postgres -d postgres -c "CREATE DATABASE app"
    on "${PORTS[$i]}" -c "CREATE EXTENSION citus" >/dev/null
done
C -c "SELECT citus_set_coordinator_host('127.0.0.1', ${PORTS[0]})" \
  -c "SELECT citus_add_node('127.0.0.1', ${PORTS[1]})" -c "SELECT citus_add_node('127.0.0.1', ${PORTS[2]})" \
  -c "CREATE EXTENSION pg_migrate" >/dev/null
for t in a b c d; do
    C >/dev/null <<SQL
SET citus.shard_count = 32;
CREATE TABLE items_$t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text);
SELECT create_distributed_table('items_$t', 'id');
INSERT INTO items_$t SELECT g, 0, 'row ' || g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE items_$t;
SQL
done
# Before each run: the rows an earlier run left dead are vacuumed (else
# autovacuum of that table would run during the next one), then a
# checkpoint on every server.
settle() {
    C -c "VACUUM items_a, items_b, items_c, items_d"
    for p in "${PORTS[@]}"; do on "$p" -c "CHECKPOINT"; done; sync
}
now() { date +%s.%N; }
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
once() {  # once TABLE: "rows updated once / rows"
    C -c "SELECT count(*) FILTER (WHERE n = 1) || ' / ' || count(*) FROM items_$1"
}
wait_job() { C -c "CALL migrate_wait($1)" >/dev/null 2>"$WORK/wait.err" || { cat "$WORK/wait.err" >&2; return 1; }; }

# 1. The single UPDATE.
settle
t0=$(now); C -c "UPDATE items_a SET n = n + 1" >/dev/null; t1=$(now)
t_update=$(secs "$t0" "$t1")
once_a=$(once a)

# 2. migrate_backfill, parallel => 2.
settle
b0=$(now)
job=$(C -c "SELECT migrate_backfill('items_b', 'n = n + 1', parallel => 2)")
wait_job "$job"
b1=$(now)
t_backfill=$(secs "$b0" "$b1")
once_b=$(once b)
shards=$(C -c "SELECT count(*) || ' slices, ' || count(DISTINCT substring(slice from ' on (.*)$')) || ' nodes'
                 FROM migrate_progress WHERE parent_job = $job AND state = 'succeeded'")
ratio=$(awk -v u="$t_update" -v b="$t_backfill" 'BEGIN { printf "%.2f", u / b }')

# 3. kill -9 of a node's process backfilling a shard, about half-way.
settle
k0=$(now)
jobc=$(C -c "SELECT migrate_backfill('items_c', 'n = n + 1', parallel => 2)")
killed=""
while [ -z "$killed" ]; do
    done_rows=$(C -c "SELECT coalesce(sum(rows_done), 0) FROM migrate_progress WHERE parent_job = $jobc")
    if [ "$done_rows" -ge $(( ROWS / 2 )) ]; then
        pid=$(on "${PORTS[1]}" -c "SELECT worker_pid FROM migrate_progress WHERE state = 'running' AND worker_pid IS NOT NULL LIMIT 1")
        if [ -n "$pid" ]; then kill -9 "$pid"; killed="$pid at $done_rows rows"; fi
    fi
    sleep 0.05
done
wait_job "$jobc"
k1=$(now)
once_c=$(once c)
crashes=$(grep -c "terminated by signal 9" "${DIRS[1]}/server.log" || true)

# 4. The same under a writer.
. "$(dirname "$0")/lib/latency.sh"
cat > "$WORK/w.sql" <<SQL
\set id random(1, $ROWS)
UPDATE items_d SET note = 'w' WHERE id = :id;
SQL
settle
(cd "$WORK" && $PGBENCH -n -c 2 -j 1 -R 100 -T 600 -h 127.0.0.1 -p "${PORTS[0]}" -U postgres \
    -f "$WORK/w.sql" -l --log-prefix=wd app > "$WORK/wd.out" 2>&1) &
wpid=$!
sleep 3
d0=$(now)
jobd=$(C -c "SELECT migrate_backfill('items_d', 'n = n + 1', parallel => 2)")
wait_job "$jobd"
d1=$(now)
kill -INT "$wpid" 2>/dev/null || true
wait "$wpid" 2>/dev/null || true
once_d=$(once d)
latencies wd "$d0" "$d1" > "$WORK/d.lat"
writes=$(wc -l < "$WORK/d.lat")
p50=$(pct 50 < "$WORK/d.lat"); p99=$(pct 99 < "$WORK/d.lat"); max=$(tail -n1 "$WORK/d.lat")
failed_w=$(awk -F': ' '/number of failed transactions/ { split($2, x, " "); n += x[1] } END { print n + 0 }' "$WORK/wd.out")

ok() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
p99_ok=no; awk -v p="$p99" 'BEGIN { exit !(p <= 400) }' && p99_ok=yes
verdict=MET
ok "$ratio" 0.7 || verdict=MISSED
[ "$once_b" = "$ROWS / $ROWS" ] && [ "$once_c" = "$ROWS / $ROWS" ] && [ "$once_d" = "$ROWS / $ROWS" ] || verdict=MISSED
[ "$p99_ok" = yes ] || verdict=MISSED

cat <<EOF
## Citus: a distributed table's backfill, shard by shard

A coordinator and two worker nodes on this machine (Citus 13.2.2, \`citus,pg_migrate\` preloaded on
each); \`items\` has $(printf "%'d" "$ROWS") rows in 32 hash-distributed shards, 16 on each worker;
\`SET n = n + 1\` on identical copies; before each run the earlier runs' dead rows are vacuumed
(so that no autovacuum of them runs during it) and every server checkpoints.

| how | seconds | vs the single UPDATE | rows updated once |
|---|---:|---:|---|
| single UPDATE through the coordinator (baseline) | $t_update | - | $once_a |
| migrate_backfill(..., parallel => 2) | $t_backfill | ${ratio}x (target >= 0.7x) | $once_b |
| the same with kill -9 on a worker node ($killed) | $(secs "$k0" "$k1") | | $once_c |
| the same under a writer | $(secs "$d0" "$d1") | | $once_d |

- The backfill ran as $shards (each shard's job run by the node that holds it).
- The writer (pgbench, 2 clients, 100 updates/s of random rows of the same table, through the
  coordinator) during the last backfill: $writes writes, $failed_w failed, p50 $p50 ms, p99 $p99 ms,
  max $max ms (target: p99 within 2x the 200 ms batch target, 400 ms).
- kill -9 on the worker node: $crashes crash(es) in its log; the job finished and every row was updated once.

Target $verdict: ${ratio}x the single UPDATE, writer p99 $p99 ms, rows once: $once_b, $once_c and $once_d.
EOF
