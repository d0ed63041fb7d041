//! Pure logic: no PostgreSQL calls, covered by plain `cargo test`.

pub mod history;
pub mod jobs;
pub mod keyset;
