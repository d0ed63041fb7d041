//! Job kinds: every kind of job pg_migrate runs, each one module.
//!
//! A kind holds its submit-time checks (its SQL function), its work (steps
//! in a transaction, or statements a worker runs outside one), how it is
//! stopped, how its progress and success read, and the facts the views and
//! the claim queries need ([`model::Facts`]).  The drivers (`runner`, the
//! worker, `CALL migrate_run`) and the control functions reach a kind only
//! through [`model::JobKind`].
//!
//! Adding a kind: one module that implements `JobKind`, and one line in
//! `kinds!` below.  The install script copies every kind's facts into
//! `pgmigrate.kinds` (from `pgmigrate.job_kinds()`), which the job table's
//! foreign key, the views and the claim queries read; nothing else names a
//! kind.

pub mod alter_type;
pub mod backfill;
pub mod constraint;
pub mod ddl;
#[cfg(feature = "pg_test")]
pub mod example;
pub mod index;
pub mod job;
pub mod model;
pub mod not_null;
pub mod queue;

use crate::catalog::jobs::Job;
use crate::sys::Caught;
use model::JobKind;
use pgrx::prelude::*;

macro_rules! kinds {
    ($( $(#[$attr:meta])* $variant:ident => $imp:expr ),* $(,)?) => {
        /// Every kind of job.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind {
            $( $(#[$attr])* $variant ),*
        }

        impl Kind {
            /// Every kind, in registration order.
            // One push per kind, so that a kind can be left out by #[cfg].
            #[allow(clippy::vec_init_then_push)]
            pub fn all() -> Vec<Kind> {
                let mut all = Vec::new();
                $( $(#[$attr])* all.push(Kind::$variant); )*
                all
            }

            /// What the kind does.
            pub fn imp(self) -> &'static dyn JobKind {
                match self {
                    $( $(#[$attr])* Kind::$variant => $imp ),*
                }
            }
        }
    };
}

// The registration: one line per kind.
kinds! {
    Backfill => &backfill::Backfill,
    CreateIndex => &index::CREATE,
    DropIndex => &index::DROP,
    Reindex => &index::REINDEX,
    SetNotNull => &not_null::SetNotNull,
    AddConstraint => &constraint::AddConstraint,
    AlterType => &alter_type::AlterType,
    // A kind that exists in test builds only: it shows what a kind needs.
    #[cfg(feature = "pg_test")]
    Example => &example::Example,
}

impl Kind {
    /// As `pgmigrate.jobs.kind` stores it.
    pub fn name(self) -> &'static str {
        self.imp().facts().name
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::all().into_iter().find(|k| k.name() == name)
    }
}

/// The kind of a stored job.  A kind this build does not know (a row
/// written by a newer version) is an error, not a guess.
pub fn of(job: &Job) -> Result<&'static dyn JobKind, Caught> {
    Kind::from_name(&job.kind)
        .map(Kind::imp)
        .ok_or_else(|| Caught {
            sqlstate: "XX000".into(),
            message: format!("job {} has kind \"{}\", which this version of pg_migrate does not know", job.id, job.kind),
            detail: None,
            hint: Some("Install the pg_migrate version that queued it (ALTER EXTENSION pg_migrate UPDATE), or cancel the job.".into()),
        })
}

/// Every kind's facts, for the install script (`pgmigrate.kinds`).
#[pg_extern(immutable, parallel_safe, schema = "pgmigrate", name = "job_kinds")]
#[allow(clippy::type_complexity)]
fn job_kinds() -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(noun, String),
        name!(session, bool),
        name!(table_lock, String),
        name!(locks_index, bool),
        name!(one_per_table, Option<String>),
        name!(counts_rows, bool),
        name!(on_index, bool),
        name!(orphaned, String),
    ),
> {
    TableIterator::new(Kind::all().into_iter().map(|k| {
        let imp = k.imp();
        let f = imp.facts();
        (
            f.name.to_string(),
            f.noun.to_string(),
            !imp.worker_only(),
            f.table_lock.name().to_string(),
            f.locks_index,
            f.one_per_table.map(String::from),
            f.counts_rows,
            f.on_index,
            f.orphaned.to_string(),
        )
    }))
}
