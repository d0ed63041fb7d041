//! The SQL a backfill runs, built from catalog names and the user's clauses.
//!
//! Batches walk the table in key order (keyset pagination: never OFFSET,
//! never all keys in memory): each batch takes the next `limit` keys after
//! the cursor and at or below the upper bound fixed when the job started,
//! updates those rows that match the where clause, and returns how many keys
//! it covered, how many rows it changed and the last key.  Tables without a
//! usable key are walked by physical block ranges instead (`ctid`).
//!
//! Identifiers come from the catalog and are always quoted.  The user's
//! clauses are placed on lines of their own inside parentheses, so a
//! trailing `--` comment cannot swallow what follows (and each is checked
//! on its own first, see `kinds::backfill::clause`).
//!
//! A batch runs with the submitter's search_path, so that the clauses mean
//! what they meant at submit.  Everything written here around them is
//! therefore qualified: operators as `OPERATOR(pg_catalog.>)`, functions as
//! `pg_catalog.count`, types as `pg_catalog.text` or the key column's type
//! by schema and name.  No object in the submitter's schemas can stand in
//! for them.

use serde::{Deserialize, Serialize};

/// One column of the key the batches walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyColumn {
    pub name: String,
    /// The column's type, qualified and quoted, e.g. `"pg_catalog"."int8"`
    /// (no type modifier: a parameter of the key's type needs none).
    pub type_name: String,
    /// The type has a `max` aggregate (uuid, for one, has none).
    #[serde(default)]
    pub has_max: bool,
}

/// How batches are cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Walk {
    /// By the primary key (or a unique index on NOT NULL columns).
    Key { columns: Vec<KeyColumn> },
    /// By block ranges of the heap, for tables without such a key.
    Ctid,
}

/// A backfill job's instructions, kept in the job row as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillSpec {
    pub set_clause: String,
    pub where_clause: Option<String>,
    pub walk: Walk,
    /// Pause between batches.
    pub sleep_ms: i64,
    /// lock_timeout of each batch (0: none).
    pub lock_timeout_ms: i64,
    /// statement timeout of each batch (0: none).
    pub statement_timeout_ms: i64,
    /// Retries of one batch after lock timeouts, deadlocks, serialization
    /// failures and statement timeouts.
    pub max_retries: i32,
    /// The submitter's session settings, applied to every batch.
    pub settings: Vec<(String, String)>,
    /// The batch_size given at submit: batches keep it (no adaptive
    /// sizing); None: sizes adapt to the target batch duration.
    #[serde(default)]
    pub fixed_batch_size: Option<i64>,
    #[serde(default)]
    pub pace: crate::engine::pace::PaceOptions,
    #[serde(default)]
    pub on_error: crate::engine::pace::OnError,
    /// `parallel => N`: the job is split into slices, up to N of which run
    /// at once.  A partitioned table is always split (a slice per
    /// partition); None on a slice itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<i64>,
    /// A slice that is one shard of a distributed table: its rows are
    /// backfilled by the node that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<super::shards::RemoteShard>,
}

// What the statements say around the user's clauses, resolved in
// pg_catalog whatever the search_path.
const EQ: &str = "OPERATOR(pg_catalog.=)";
const LT: &str = "OPERATOR(pg_catalog.<)";
const LE: &str = "OPERATOR(pg_catalog.<=)";
const GT: &str = "OPERATOR(pg_catalog.>)";
const GE: &str = "OPERATOR(pg_catalog.>=)";
const TEXT: &str = "pg_catalog.text";

/// Quote an identifier: always, so names keep their case.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// PostgreSQL 15's key words that an identifier must be quoted to be
/// (every class but the unreserved: reserved, column-name and
/// type-or-function-name key words), as PostgreSQL's own
/// `quote_identifier` decides.  A pgrx test compares this list with the
/// server's `pg_get_keywords()`.
const QUOTED_KEYWORDS: &[&str] = &[
    // reserved
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
    // column names only
    "between",
    "bigint",
    "bit",
    "boolean",
    "char",
    "character",
    "coalesce",
    "dec",
    "decimal",
    "exists",
    "extract",
    "float",
    "greatest",
    "grouping",
    "inout",
    "int",
    "integer",
    "interval",
    "least",
    "national",
    "nchar",
    "none",
    "normalize",
    "nullif",
    "numeric",
    "out",
    "overlay",
    "position",
    "precision",
    "real",
    "row",
    "setof",
    "smallint",
    "substring",
    "time",
    "timestamp",
    "treat",
    "trim",
    "values",
    "varchar",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
    // type or function names only
    "authorization",
    "binary",
    "collation",
    "concurrently",
    "cross",
    "current_schema",
    "freeze",
    "full",
    "ilike",
    "inner",
    "is",
    "isnull",
    "join",
    "left",
    "like",
    "natural",
    "notnull",
    "outer",
    "overlaps",
    "right",
    "similar",
    "tablesample",
    "verbose",
];

/// Every key word `display_ident` quotes.
pub fn quoted_keywords() -> &'static [&'static str] {
    QUOTED_KEYWORDS
}

/// An identifier as people write it: quoted only when it must be (not
/// lower case letters, digits and underscores, or a key word of a class
/// that needs quotes), exactly as PostgreSQL's `quote_identifier`.
pub fn display_ident(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && !QUOTED_KEYWORDS.contains(&s)
    {
        s.to_string()
    } else {
        quote_ident(s)
    }
}

/// `schema.name` as people read it: each part quoted only when it must be.
pub fn display_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", display_ident(schema), display_ident(name))
}

/// Everything needed to write a backfill's statements.
#[derive(Debug, Clone)]
pub struct Backfill<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub walk: &'a Walk,
    pub set_clause: &'a str,
    pub where_clause: Option<&'a str>,
}

impl Backfill<'_> {
    fn relation(&self) -> String {
        format!("{}.{}", quote_ident(self.schema), quote_ident(self.table))
    }

    fn filter(&self) -> String {
        match self.where_clause {
            Some(w) => format!("\n   AND (\n{w}\n)"),
            None => String::new(),
        }
    }

    /// The statement as a DBA would write it by hand: shown in
    /// migrate_progress, and used at submit to check the clauses.
    pub fn plain_update(&self) -> String {
        let mut s = format!("UPDATE {} SET\n{}\n", self.relation(), self.set_clause);
        if let Some(w) = self.where_clause {
            s.push_str(&format!("WHERE (\n{w}\n)"));
        }
        s
    }

    /// `ARRAY["a"::pg_catalog.text, ...]`: a row's key as the text[] a
    /// cursor holds.
    fn key_texts(columns: &[KeyColumn]) -> String {
        let texts: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::{TEXT}", quote_ident(&c.name)))
            .collect();
        format!("ARRAY[{}]", texts.join(", "))
    }

    fn key_list(columns: &[KeyColumn], prefix: &str) -> String {
        columns
            .iter()
            .map(|c| format!("{prefix}{}", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `($first::t1, $first+1::t2, ...)`: a row of typed parameters.
    fn param_row(columns: &[KeyColumn], first: usize) -> String {
        let items: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", first + i, c.type_name))
            .collect();
        format!("({})", items.join(", "))
    }

    /// The largest key now (`last`), the upper bound of the job, or the
    /// smallest.  Returns one text[], or no row for an empty table.
    pub fn bound_sql(&self, last: bool) -> Option<String> {
        let Walk::Key { columns } = self.walk else {
            return None;
        };
        let order: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "{}{}",
                    quote_ident(&c.name),
                    if last { " DESC" } else { "" }
                )
            })
            .collect();
        Some(format!(
            "SELECT {} FROM {} ORDER BY {} LIMIT 1",
            Self::key_texts(columns),
            self.relation(),
            order.join(", ")
        ))
    }

    /// Keys of the rows in a sample of about `$1` percent of the table's
    /// blocks, in key order: where a parallel job cuts its key range into
    /// slices.
    pub fn sample_keys_sql(&self) -> Option<String> {
        let Walk::Key { columns } = self.walk else {
            return None;
        };
        Some(format!(
            "SELECT {} FROM {} TABLESAMPLE pg_catalog.system ($1::pg_catalog.float4) ORDER BY {}",
            Self::key_texts(columns),
            self.relation(),
            Self::key_list(columns, "")
        ))
    }

    /// The two statements of one batch, run one after the other in the same
    /// subtransaction:
    ///
    /// - `bounds` finds the batch: how many keys it covers (bigint) and its
    ///   last key (text[], NULL when nothing is left).  Key walk parameters:
    ///   the cursor (`$1..$n`, when `after_cursor`), the upper bound, then the
    ///   batch size; it reads only the key's index where it can.
    /// - `update` changes the batch's rows: those with keys after the cursor
    ///   and up to the last key (parameters: the cursor, when `after_cursor`,
    ///   then the last key).  Both ends of the range are known when it is
    ///   planned, so an index range scan always beats reading the whole table,
    ///   whatever the planner believes of the where clause.  A row that a
    ///   concurrent update moves into the range is this batch's, one moved out
    ///   is not: PostgreSQL rechecks the range and the where clause on the
    ///   newest version of a row updated under it.
    ///
    /// Ctid walk: both take `$1` and `$2`, the block range `[$1, $2)`.
    pub fn batch(&self, after_cursor: bool) -> Batch {
        match self.walk {
            Walk::Key { columns } => self.key_batch(columns, after_cursor),
            Walk::Ctid => self.ctid_batch(),
        }
    }

    /// The key range of a batch, for the parameter layout of `batch`:
    /// (the cursor condition with a trailing AND, or nothing; the upper
    /// bound condition; the number of the LIMIT parameter).
    fn range(columns: &[KeyColumn], after_cursor: bool) -> (String, String, usize) {
        let n = columns.len();
        let keys = Self::key_list(columns, "");
        let (lower, upper_first, limit) = if after_cursor {
            (
                format!("({keys}) {GT} {} AND ", Self::param_row(columns, 1)),
                n + 1,
                2 * n + 1,
            )
        } else {
            (String::new(), 1, n + 1)
        };
        (
            lower,
            format!("({keys}) {LE} {}", Self::param_row(columns, upper_first)),
            limit,
        )
    }

    /// The keys one batch covers, as text[] rows in key order (same
    /// parameters as `bounds`).  For finding a failing row.
    pub fn batch_keys_sql(&self, after_cursor: bool) -> Option<String> {
        let Walk::Key { columns } = self.walk else {
            return None;
        };
        let keys = Self::key_list(columns, "");
        let texts: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::{TEXT}", quote_ident(&c.name)))
            .collect();
        let (lower, upper, limit) = Self::range(columns, after_cursor);
        Some(format!(
            "SELECT ARRAY[{}] FROM {} WHERE {lower}{upper} ORDER BY {keys} LIMIT ${limit}",
            texts.join(", "),
            self.relation()
        ))
    }

    fn key_batch(&self, columns: &[KeyColumn], after_cursor: bool) -> Batch {
        let n = columns.len();
        let keys = Self::key_list(columns, "");
        let (lower, upper, limit) = Self::range(columns, after_cursor);
        let desc: Vec<String> = columns
            .iter()
            .map(|c| format!("{} DESC", quote_ident(&c.name)))
            .collect();
        let texts: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::{TEXT}", quote_ident(&c.name)))
            .collect();
        let bounds = if n == 1 && columns[0].has_max {
            // One key column: count and max over the index scan, nothing
            // kept or sorted.
            format!(
                "SELECT pg_catalog.count(*), CASE WHEN pg_catalog.count(*) {EQ} 0 THEN NULL ELSE ARRAY[pg_catalog.max(_pgm_k)::{TEXT}] END
  FROM (SELECT {keys} AS _pgm_k FROM {rel}
         WHERE {lower}{upper}
         ORDER BY {keys}
         LIMIT ${limit}) _pgm_batch",
                rel = self.relation(),
            )
        } else {
            format!(
                "WITH _pgm_batch AS MATERIALIZED (
    SELECT {keys} FROM {rel}
     WHERE {lower}{upper}
     ORDER BY {keys}
     LIMIT ${limit}
)
SELECT (SELECT pg_catalog.count(*) FROM _pgm_batch),
       (SELECT ARRAY[{texts}] FROM _pgm_batch ORDER BY {desc} LIMIT 1)",
                rel = self.relation(),
                texts = texts.join(", "),
                desc = desc.join(", "),
            )
        };
        let last_first = if after_cursor { n + 1 } else { 1 };
        let update = format!(
            "UPDATE {rel} SET
{set}
 WHERE {lower}({keys}) {LE} {last}{filter}",
            rel = self.relation(),
            set = self.set_clause,
            last = Self::param_row(columns, last_first),
            filter = self.filter(),
        );
        Batch { bounds, update }
    }

    fn ctid_batch(&self) -> Batch {
        let range = format!(
            "ctid {GE} pg_catalog.format('(%s,0)', $1::pg_catalog.int8)::pg_catalog.tid \
             AND ctid {LT} pg_catalog.format('(%s,0)', $2::pg_catalog.int8)::pg_catalog.tid"
        );
        Batch {
            bounds: format!(
                "SELECT pg_catalog.count(*), ARRAY[$2::{TEXT}] FROM {} WHERE {range}",
                self.relation()
            ),
            update: format!(
                "UPDATE {rel} SET
{set}
 WHERE {range}{filter}",
                rel = self.relation(),
                set = self.set_clause,
                filter = self.filter(),
            ),
        }
    }
}

/// The statements of one batch (see `Backfill::batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bounds: String,
    pub update: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cols: &[(&str, &str)]) -> Walk {
        Walk::Key {
            columns: cols
                .iter()
                .map(|(n, t)| KeyColumn {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    has_max: *t != "uuid",
                })
                .collect(),
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(
            display_qualified("public", "orders_2026"),
            "public.orders_2026"
        );
        assert_eq!(display_qualified("Sales", "1st"), "\"Sales\".\"1st\"");
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("Weird \"name\""), "\"Weird \"\"name\"\"\"");
    }

    #[test]
    fn single_key_batch() {
        let walk = key(&[("id", "bigint")]);
        let b = Backfill {
            schema: "public",
            table: "orders",
            walk: &walk,
            set_clause: "n = n + 1",
            where_clause: Some("n < 10"),
        };
        let first = b.batch(false);
        assert!(
            first
                .bounds
                .contains("WHERE (\"id\") OPERATOR(pg_catalog.<=) ($1::bigint)\n         ORDER BY \"id\"\n         LIMIT $2) _pgm_batch"),
            "{}",
            first.bounds
        );
        assert_eq!(first.update, "UPDATE \"public\".\"orders\" SET\nn = n + 1\n WHERE (\"id\") OPERATOR(pg_catalog.<=) ($1::bigint)\n   AND (\nn < 10\n)");
        let next = b.batch(true);
        assert!(
            next.bounds
                .contains("WHERE (\"id\") OPERATOR(pg_catalog.>) ($1::bigint) AND (\"id\") OPERATOR(pg_catalog.<=) ($2::bigint)"),
            "{}",
            next.bounds
        );
        assert!(next.bounds.contains("LIMIT $3"), "{}", next.bounds);
        assert!(
            next.bounds.starts_with("SELECT pg_catalog.count(*), CASE WHEN pg_catalog.count(*) OPERATOR(pg_catalog.=) 0 THEN NULL ELSE ARRAY[pg_catalog.max(_pgm_k)::pg_catalog.text] END"),
            "{}",
            next.bounds
        );
        assert_eq!(
            next.update,
            "UPDATE \"public\".\"orders\" SET\nn = n + 1\n WHERE (\"id\") OPERATOR(pg_catalog.>) ($1::bigint) AND (\"id\") OPERATOR(pg_catalog.<=) ($2::bigint)\n   AND (\nn < 10\n)"
        );
        assert!(!next.bounds.contains("OFFSET") && !next.update.contains("OFFSET"));
    }

    #[test]
    fn composite_key_batch_uses_row_comparison() {
        let walk = key(&[
            ("tenant", "integer"),
            ("created", "timestamp without time zone"),
        ]);
        let b = Backfill {
            schema: "app",
            table: "Events",
            walk: &walk,
            set_clause: "x = 1",
            where_clause: None,
        };
        let batch = b.batch(true);
        assert!(batch.bounds.contains(
            "(\"tenant\", \"created\") OPERATOR(pg_catalog.>) ($1::integer, $2::timestamp without time zone) AND (\"tenant\", \"created\") OPERATOR(pg_catalog.<=) ($3::integer, $4::timestamp without time zone)"
        ), "{}", batch.bounds);
        assert!(batch.bounds.contains("LIMIT $5"));
        assert!(
            batch
                .bounds
                .contains("ORDER BY \"tenant\" DESC, \"created\" DESC LIMIT 1"),
            "{}",
            batch.bounds
        );
        assert!(batch.update.ends_with(
            "WHERE (\"tenant\", \"created\") OPERATOR(pg_catalog.>) ($1::integer, $2::timestamp without time zone) AND (\"tenant\", \"created\") OPERATOR(pg_catalog.<=) ($3::integer, $4::timestamp without time zone)"
        ), "{}", batch.update);
        assert!(
            !batch.update.contains("AND (\n"),
            "no where clause, no filter"
        );
        assert!(b
            .bound_sql(false)
            .unwrap()
            .ends_with("ORDER BY \"tenant\", \"created\" LIMIT 1"));
        assert_eq!(
            b.bound_sql(true).unwrap(),
            "SELECT ARRAY[\"tenant\"::pg_catalog.text, \"created\"::pg_catalog.text] FROM \"app\".\"Events\" ORDER BY \"tenant\" DESC, \"created\" DESC LIMIT 1"
        );
    }

    #[test]
    fn a_trailing_comment_cannot_swallow_the_statement() {
        let walk = key(&[("id", "bigint")]);
        let b = Backfill {
            schema: "public",
            table: "t",
            walk: &walk,
            set_clause: "x = 1 -- set",
            where_clause: Some("x IS NULL -- only new"),
        };
        let batch = b.batch(true);
        // every user fragment ends its line, so what follows survives
        assert!(
            batch.update.contains("x = 1 -- set\n WHERE "),
            "{}",
            batch.update
        );
        assert!(
            batch.update.ends_with("x IS NULL -- only new\n)"),
            "{}",
            batch.update
        );
    }

    #[test]
    fn batch_keys_share_the_batch_parameters() {
        let walk = key(&[("a", "integer"), ("b", "text")]);
        let b = Backfill {
            schema: "s",
            table: "t",
            walk: &walk,
            set_clause: "x = 1",
            where_clause: None,
        };
        assert_eq!(
            b.batch_keys_sql(true).unwrap(),
            "SELECT ARRAY[\"a\"::pg_catalog.text, \"b\"::pg_catalog.text] FROM \"s\".\"t\" WHERE (\"a\", \"b\") OPERATOR(pg_catalog.>) ($1::integer, $2::text) AND (\"a\", \"b\") OPERATOR(pg_catalog.<=) ($3::integer, $4::text) ORDER BY \"a\", \"b\" LIMIT $5"
        );
        assert!(b.batch_keys_sql(false).unwrap().contains(
            "WHERE (\"a\", \"b\") OPERATOR(pg_catalog.<=) ($1::integer, $2::text) ORDER BY"
        ));
    }

    #[test]
    fn ctid_walk() {
        let b = Backfill {
            schema: "public",
            table: "logs",
            walk: &Walk::Ctid,
            set_clause: "y = 2",
            where_clause: Some("y IS NULL"),
        };
        assert!(b.bound_sql(true).is_none());
        let batch = b.batch(true);
        let range = "ctid OPERATOR(pg_catalog.>=) pg_catalog.format('(%s,0)', $1::pg_catalog.int8)::pg_catalog.tid \
                     AND ctid OPERATOR(pg_catalog.<) pg_catalog.format('(%s,0)', $2::pg_catalog.int8)::pg_catalog.tid";
        assert_eq!(
            batch.bounds,
            format!("SELECT pg_catalog.count(*), ARRAY[$2::pg_catalog.text] FROM \"public\".\"logs\" WHERE {range}")
        );
        assert_eq!(
            batch.update,
            format!(
                "UPDATE \"public\".\"logs\" SET\ny = 2\n WHERE {range}\n   AND (\ny IS NULL\n)"
            )
        );
    }

    #[test]
    fn plain_update_is_what_a_dba_reads() {
        let walk = key(&[("id", "bigint")]);
        let b = Backfill {
            schema: "public",
            table: "articles",
            walk: &walk,
            set_clause: "summary = left(body, 300)",
            where_clause: Some("summary IS NULL"),
        };
        assert_eq!(b.plain_update(), "UPDATE \"public\".\"articles\" SET\nsummary = left(body, 300)\nWHERE (\nsummary IS NULL\n)");
    }

    #[test]
    fn keys_without_max_keep_the_materialized_bounds() {
        let walk = key(&[("id", "uuid")]);
        let b = Backfill {
            schema: "s",
            table: "t",
            walk: &walk,
            set_clause: "x = 1",
            where_clause: None,
        };
        let bounds = b.batch(true).bounds;
        assert!(
            bounds.starts_with("WITH _pgm_batch AS MATERIALIZED"),
            "{bounds}"
        );
        assert!(!bounds.contains("max("), "{bounds}");
        assert!(
            bounds.contains("SELECT pg_catalog.count(*) FROM _pgm_batch"),
            "{bounds}"
        );
    }

    #[test]
    fn walk_serialises_with_a_mode_tag() {
        let walk = key(&[("id", "bigint")]);
        let json = serde_json::to_string(&walk).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"key","columns":[{"name":"id","type_name":"bigint","has_max":true}]}"#
        );
        assert_eq!(
            serde_json::from_str::<Walk>(r#"{"mode":"ctid"}"#).unwrap(),
            Walk::Ctid
        );
    }
}
