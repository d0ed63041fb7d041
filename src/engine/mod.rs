//! Pure logic: no PostgreSQL calls, covered by plain `cargo test`.

pub mod history;
