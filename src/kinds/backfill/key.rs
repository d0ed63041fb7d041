//! Which key a backfill's batches walk.

use crate::engine::keyset::KeyColumn;
use pgrx::prelude::*;

/// The key to walk: the primary key, else the narrowest unique index on
/// NOT NULL columns (no expressions, no predicate).  None: walk by ctid.
pub fn choose_key(relid: pg_sys::Oid) -> Option<Vec<KeyColumn>> {
    crate::sys::pinned(|| Spi::connect(|client| {
        let rows = client.select(
            "SELECT array_agg(a.attname::text ORDER BY k.ord),
                    array_agg((SELECT pg_catalog.format('%I.%I', tn.nspname, t.typname)
                                 FROM pg_catalog.pg_type t
                                 JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
                                WHERE t.oid = a.atttypid) ORDER BY k.ord),
                    array_agg(EXISTS (SELECT 1 FROM pg_catalog.pg_aggregate g
                                        JOIN pg_catalog.pg_proc p ON p.oid = g.aggfnoid
                                       WHERE p.proname = 'max' AND p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
                                         AND p.proargtypes[0] = a.atttypid) ORDER BY k.ord)
               FROM pg_catalog.pg_index i
              CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indimmediate
                AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
              GROUP BY i.indexrelid, i.indisprimary
             HAVING bool_and(a.attnotnull)
              ORDER BY i.indisprimary DESC, count(*), i.indexrelid
              LIMIT 1",
            None,
            &[relid.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        let names: Vec<String> = row.get(1)?.unwrap_or_default();
        let types: Vec<String> = row.get(2)?.unwrap_or_default();
        let has_max: Vec<bool> = row.get(3)?.unwrap_or_default();
        Ok::<_, pgrx::spi::SpiError>(Some(
            names
                .into_iter()
                .zip(types)
                .zip(has_max)
                .map(|((name, type_name), has_max)| KeyColumn { name, type_name, has_max })
                .collect(),
        ))
    }))
    .unwrap_or_else(|e| pgrx::error!("pg_migrate: reading the table's keys: {e}"))
}
