//! The SQL-callable surface, one module per feature.

pub mod analyze;
pub mod args;
pub mod exec;
pub mod history;
pub mod jobs;
pub mod trace;
