//! Arguments every SQL function of pg_migrate checks the same way: integer
//! and interval ranges, schedules, start times, the migration a job or a
//! `migrate_exec` run is linked to.

use crate::catalog::history as log;
use crate::engine::cron::Cron;
use crate::engine::history as rules;
use crate::engine::pace;
use crate::error::{MigrateError, OrReport};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

pub fn int_arg(
    arg: &'static str,
    v: Option<i32>,
    min: i32,
    max: i32,
    allowed: &'static str,
) -> i32 {
    let v = v.ok_or(MigrateError::NullArgument { arg }).or_report();
    if v < min || v > max {
        MigrateError::OutOfRange {
            arg,
            value: v.to_string(),
            allowed,
        }
        .report();
    }
    v
}

/// An interval as milliseconds; months count as 30 days.
pub fn interval_ms(arg: &'static str, v: Option<Interval>) -> i64 {
    let v = v.ok_or(MigrateError::NullArgument { arg }).or_report();
    if v.is_negative() {
        MigrateError::Negative { arg }.report();
    }
    v.as_micros().min(i64::MAX as i128) as i64 / 1000
}

/// A maintenance window from `window_start` (cron) and `window_length`,
/// checked: both or neither.
pub fn window_option(
    window_start: Option<&str>,
    window_length: Option<Interval>,
) -> Option<pace::WindowSpec> {
    match (window_start, window_length) {
        (None, None) => None,
        (Some(cron), Some(length)) => {
            if let Err(e) = Cron::parse(cron) {
                MigrateError::InvalidValue {
                    arg: "window_start",
                    value: cron.to_string(),
                    allowed:
                        "a cron expression of five fields, such as '0 1 * * *' (01:00 every day)",
                }
                .report_with_detail(e.why);
            }
            let secs = interval_ms("window_length", Some(length)) / 1000;
            if secs < 60 {
                MigrateError::OutOfRange {
                    arg: "window_length",
                    value: format!("{secs} seconds"),
                    allowed: "a window_length of at least one minute, such as '4 hours'",
                }
                .report();
            }
            Some(pace::WindowSpec {
                cron: cron.to_string(),
                length_secs: secs,
            })
        }
        (Some(_), None) => MigrateError::NullArgument {
            arg: "window_length",
        }
        .report(),
        (None, Some(_)) => MigrateError::NullArgument {
            arg: "window_start",
        }
        .report(),
    }
}

/// `migration => ARRAY['app', 'name']`, checked.
pub fn migration_option(migration: Option<Vec<Option<String>>>) -> Option<(String, String)> {
    migration_arg("migration", migration)
}

/// An argument that names a migration as `ARRAY['app', 'name']`, checked.
pub fn migration_arg(
    arg: &'static str,
    migration: Option<Vec<Option<String>>>,
) -> Option<(String, String)> {
    migration.map(|m| match m.as_slice() {
        [Some(app), Some(name)] => (
            rules::require_name("app", Some(app))
                .or_report()
                .to_string(),
            rules::require_name("name", Some(name))
                .or_report()
                .to_string(),
        ),
        _ => MigrateError::InvalidValue {
            arg,
            value: format!(
                "{{{}}}",
                m.iter()
                    .map(|e| e.as_deref().unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            allowed: "ARRAY['app', 'name'], such as ARRAY['shop', '0043_backfill_summary']",
        }
        .report(),
    })
}

/// `after_jobs => ARRAY[...]` and `after_migration => ARRAY['app',
/// 'name']`: what a new job waits for, checked.  Every job named must
/// exist (a gate on a job that is not there would never open).
pub fn gate_options(
    after_jobs: Option<Vec<Option<i64>>>,
    after_migration: Option<Vec<Option<String>>>,
) -> crate::catalog::jobs::Gates {
    let mut jobs = Vec::new();
    for id in after_jobs.unwrap_or_default() {
        let Some(id) = id else {
            MigrateError::NullArgument { arg: "after_jobs" }.report()
        };
        if !crate::catalog::as_owner(|| {
            crate::sys::ask(
                "SELECT EXISTS (SELECT 1 FROM pgmigrate.jobs WHERE job_id OPERATOR(pg_catalog.=) $1)",
                &[id.into()],
            )
        }) {
            MigrateError::UnknownJob { job_id: id }.report();
        }
        if !jobs.contains(&id) {
            jobs.push(id);
        }
    }
    let migration = migration_arg("after_migration", after_migration);
    crate::catalog::jobs::Gates { jobs, migration }
}

/// A job's start time: NULL (now) or a finite time.  Infinity would never
/// come, and the workers could not compute a wait for it.
pub fn run_at_option(run_at: Option<TimestampWithTimeZone>) -> Option<TimestampWithTimeZone> {
    if run_at.is_some_and(|t| !t.is_finite()) {
        MigrateError::InvalidValue {
            arg: "run_at",
            value: if run_at.is_some_and(|t| t.is_infinity()) {
                "infinity".into()
            } else {
                "-infinity".into()
            },
            allowed: "a finite time, such as now() + interval '1 hour' (NULL runs it at once; a job that should not run yet can be paused)",
        }
        .report();
    }
    run_at
}

/// Open the history run a job is linked to (call as the owner, after
/// checking `may_write_history` as the caller).
pub fn start_linked_run<'a>(
    migration: Option<&'a (String, String)>,
    link_allowed: bool,
    description: &str,
    role: &str,
) -> Option<(&'a str, &'a str, i64)> {
    let (app, name) = migration?;
    if !link_allowed {
        MigrateError::BadMigrationLink {
            app: app.clone(),
            name: name.clone(),
            why: "permission denied for function migrate_start".into(),
        }
        .report();
    }
    let run = log::start_run(&log::RunRequest::started(app, name, description, role)).or_report();
    Some((app.as_str(), name.as_str(), run))
}

pub fn qualified_display(schema: &str, table: &str) -> String {
    crate::engine::keyset::display_qualified(schema, table)
}

/// Does the caller hold EXECUTE on migrate_start (the grant that lets a
/// role write history)?
pub fn may_write_history() -> bool {
    crate::sys::pinned(|| Spi::connect(|client| {
        client
            .select(
                "SELECT pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
                   FROM pg_catalog.pg_proc p
                   JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                              AND d.objid = p.oid AND d.deptype = 'e'
                   JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid AND x.extname = 'pg_migrate'
                  WHERE p.proname = 'migrate_start'",
                None,
                &[],
            )?
            .first()
            .get_one::<bool>()
    }))
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// What a relation of this relkind is called in messages.
pub fn relkind_name(kind: u8) -> &'static str {
    match kind {
        b'r' => "table",
        b'p' => "partitioned table",
        b'v' => "view",
        b'm' => "materialized view",
        b'f' => "foreign table",
        b'S' => "sequence",
        b'i' => "index",
        b'I' => "partitioned index",
        b'c' => "composite type",
        b't' => "TOAST table",
        _ => "relation",
    }
}
