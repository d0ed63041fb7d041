# Shared by the benchmarks with a live writer (sourced, not run): a
# pgbench log's latencies and percentiles.  $WORK holds the logs.
latencies() {   # latencies PREFIX FROM TO: ms of writes that ended in [FROM, TO], sorted
    cat "$WORK"/"$1".[0-9]* | awk -v from="$2" -v to="$3" '{ end = $5 + $6 / 1e6; if (end >= from && end <= to) printf "%.3f\n", $3 / 1000 }' | sort -n
}
pct() { awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1; printf "%.1f", v[i] }'; }
