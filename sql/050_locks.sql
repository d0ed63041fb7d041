-- Lock risk.  migrate_analyze reads the parser's output and the catalog
-- and never executes a statement; migrate_trace runs them for real in a
-- subtransaction that is always rolled back.  Neither pins search_path:
-- names in the script resolve as the caller's session resolves them, so
-- every name here is qualified.

CREATE FUNCTION migrate_analyze(sql text)
RETURNS TABLE (
    statement integer,
    statement_sql text,
    command text,
    relation regclass,
    lock_mode text,
    blocks_reads boolean,
    blocks_writes boolean,
    rewrites boolean,
    scans boolean,
    in_transaction boolean,
    table_bytes bigint,
    row_estimate bigint,
    estimated_duration interval,
    risk text,
    reason text,
    recipe text)
LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
AS $fn$
    SELECT a.statement, a.sql, a.command, a.relation::pg_catalog.regclass, a.lock_mode,
           a.blocks_reads, a.blocks_writes, a.rewrites, a.scans, a.in_transaction,
           a.table_bytes, a.row_estimate,
           pg_catalog.make_interval(secs => pg_catalog.round(a.estimated_seconds::numeric, 1)::float8),
           a.risk, a.reason, a.recipe
      FROM pgmigrate.analyze_script($1) a
$fn$;

CREATE FUNCTION migrate_trace(sql text, lock_timeout interval DEFAULT '100ms',
                              statement_timeout interval DEFAULT '10s')
RETURNS TABLE (
    statement integer,
    statement_sql text,
    relation regclass,
    lock_mode text,
    modes text[],
    rewrites boolean,
    in_transaction boolean,
    error_sqlstate text,
    error text,
    duration interval)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $fn$
    SELECT t.statement, t.sql, t.relation::pg_catalog.regclass, t.lock_mode, t.modes,
           t.rewrites, t.in_transaction, t.error_sqlstate, t.error,
           pg_catalog.make_interval(secs => t.ms / 1000.0)
      FROM pgmigrate.trace_script($1, $2, $3) t
$fn$;
