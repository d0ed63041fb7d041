//! The SQL-callable surface, one module per feature.

pub mod history;
pub mod backfill;
pub mod jobs;
