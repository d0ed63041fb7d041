//! Pure logic: no PostgreSQL calls, covered by plain `cargo test`.

pub mod cron;
pub mod history;
pub mod index;
pub mod jobs;
pub mod keyset;
pub mod locks;
pub mod migration;
pub mod pace;
pub mod shards;
