#!/usr/bin/env bash
# Set up, then run every test tier; exit non-zero on any failure and print
# the counts per tier.  `.ci/run` calls exactly this (through `make test`).
#
#   unit         cargo test --lib              pure logic, no server
#   pgrx         cargo pgrx test (#[pg_test])  in-process, each test rolled back
#   regress      pg_regress golden files       SQL-visible behaviour and errors
#   integration  cargo test --test ...         real server: sessions, crashes, workers
#   upgrade      cargo test --test upgrade     0.1.0 updated, dumped and restored, vs a fresh install
#   citus        cargo test --test citus       a Citus coordinator and two workers: shard-by-shard backfills
#   django       python -m unittest            the Django package against a real server
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
LOGS=$ROOT/target/test-logs
started=$(date +%s)

scripts/setup.sh || { echo "setup failed"; exit 1; }
mkdir -p "$LOGS"

declare -a NAMES PASSED FAILED ELAPSED
overall=0

# cargo's "test result: ok. N passed; M failed" lines, summed.
cargo_counts() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { printf "%d %d\n", p, f }' "$1"
}
# unittest -v's "name ... ok|FAIL|ERROR" lines.
unittest_counts() {
    awk '/ \.\.\. ok$/ { p++ } / \.\.\. (FAIL|ERROR)$/ { f++ } END { printf "%d %d\n", p, f }' "$1"
}
# pg_regress's "test name ... ok|FAILED" lines.
regress_counts() {
    awk '/^(test|     ) .* \.\.\. ok/ { p++ } /\.\.\. FAILED/ { f++ } /^not ok/ { f++ }
         END { printf "%d %d\n", p, f }' "$1"
}

tier() {   # tier NAME COUNTER COMMAND...
    local name=$1 counter=$2; shift 2
    local log=$LOGS/$name.log t0=$(date +%s) rc p f
    echo; echo "=== $name: $*"
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    read -r p f < <("$counter" "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # did not run to the end
    NAMES+=("$name"); PASSED+=("$p"); FAILED+=("$f"); ELAPSED+=($(( $(date +%s) - t0 )))
    if [ "$rc" -ne 0 ]; then overall=1; fi
}

tier unit cargo_counts cargo test --lib --no-fail-fast

# pgrx's test server runs as "postgres", which needs a data directory of its own.
PGRX_DATA=$ROOT/target/pgrx-test-data
mkdir -p "$PGRX_DATA" && chown postgres: "$PGRX_DATA"
tier pgrx cargo_counts cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA" tests::pg_

# The tiers below use the extension as users get it (no test functions).
echo; echo "=== install: cargo pgrx install"
if ! cargo pgrx install --pg-config "$PG_CONFIG" >"$LOGS/install.log" 2>&1; then
    tail -n 40 "$LOGS/install.log"; overall=1
fi
tier regress regress_counts scripts/regress.sh

integration=()
for f in tests/*.rs; do
    case "$f" in tests/upgrade.rs|tests/citus.rs) ;; *) integration+=(--test "$(basename "$f" .rs)") ;; esac
done
tier integration cargo_counts cargo test --no-fail-fast "${integration[@]}"

# Upgrades: 0.1.0 (tests/upgrade/) updated to this version, and dumped and
# restored, against a fresh install.
tier upgrade cargo_counts cargo test --no-fail-fast --test upgrade

# Citus: a coordinator and two worker nodes on this machine (Citus built
# from ../shared/vendor by scripts/setup.sh).
tier citus cargo_counts cargo test --no-fail-fast --test citus

# The Django package, installed as users install it, against real servers.
django_tests() {
    .venv/bin/pip install -q --force-reinstall --no-deps ./clients/django &&
        .venv/bin/python -m unittest discover -s clients/django/tests -t clients/django -v
}
tier django unittest_counts django_tests

echo; echo "=== lint: cargo fmt --check, cargo clippy"
lint="ok"
cargo fmt --check >"$LOGS/fmt.log" 2>&1 || { cat "$LOGS/fmt.log"; lint="cargo fmt --check failed"; overall=1; }
cargo clippy --all-targets --features "pg15 pg_test" -- -D warnings >"$LOGS/clippy.log" 2>&1 \
    || { grep -A12 -E "^(error|warning)" "$LOGS/clippy.log" | head -80; lint="$lint; cargo clippy failed"; overall=1; }

echo
echo "=== summary ($(( $(date +%s) - started )) s)"
total_p=0; total_f=0
for i in "${!NAMES[@]}"; do
    printf '%-12s %4d passed, %d failed  (%d s)\n' "${NAMES[$i]}" "${PASSED[$i]}" "${FAILED[$i]}" "${ELAPSED[$i]}"
    total_p=$(( total_p + PASSED[i] )); total_f=$(( total_f + FAILED[i] ))
done
echo "lint: $lint"
echo "total: $total_p passed, $total_f failed"
exit $overall
