# Shared by the backfill benchmarks (sourced, not run): the orders table
# every contender updates, each on its own identical vacuumed copy.
make_table() {   # make_table NAME ROWS (in $DB)
    $PSQL -d "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE $1 (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
    amount numeric(12,2) NOT NULL, note text, created_at timestamptz NOT NULL, amount_cents bigint);
INSERT INTO $1 (customer_id, status, amount, note, created_at)
SELECT 1 + (g::bigint * 7919) % 50000, (ARRAY['new','paid','shipped','delivered','cancelled'])[1 + g % 5],
       round(((g::bigint * 37) % 50000) / 100.0, 2), CASE WHEN g % 5 = 0 THEN 'gift wrap' END,
       '2025-01-01'::timestamptz + (g % 730) * interval '1 day'
  FROM generate_series(1, $2) g;
VACUUM ANALYZE $1;
SQL
}
SET_CENTS='amount_cents = (amount * 100)::bigint'
