//! The facts of the three index kinds.

use crate::engine::index::IndexAction;
use crate::engine::locks::LockMode;
use crate::kinds::model::Facts;

const ORPHANED: &str = "its worker stopped; the next worker cleans up and starts again";

pub static CREATE: Facts = Facts {
    name: "create_index",
    noun: "index build",
    table_lock: LockMode::ShareUpdateExclusive,
    locks_index: false,
    one_per_table: Some("index job"),
    counts_rows: false,
    on_index: true,
    orphaned: ORPHANED,
};

pub static DROP: Facts = Facts {
    name: "drop_index",
    noun: "index drop",
    table_lock: LockMode::ShareUpdateExclusive,
    locks_index: true,
    one_per_table: Some("index job"),
    counts_rows: false,
    on_index: true,
    orphaned: ORPHANED,
};

pub static REINDEX: Facts = Facts {
    name: "reindex",
    noun: "index rebuild",
    table_lock: LockMode::ShareUpdateExclusive,
    locks_index: true,
    one_per_table: Some("index job"),
    counts_rows: false,
    on_index: true,
    orphaned: ORPHANED,
};

/// The facts of the kind that runs `action`.
pub fn of(action: IndexAction) -> &'static Facts {
    match action {
        IndexAction::Create => &CREATE,
        IndexAction::Drop => &DROP,
        IndexAction::Reindex => &REINDEX,
    }
}
