//! The SQL-callable surface, one module per feature.

pub mod analyze;
pub mod backfill;
pub mod clause;
pub mod estimate;
pub mod exec;
pub mod history;
pub mod index;
pub mod jobs;
pub mod trace;
