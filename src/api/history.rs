//! Migration history: the functions deploy tools call around a migration
//! and the startup check applications call before serving.

use crate::catalog::history::{self as log, NewEvent};
use crate::catalog::{as_owner, current_role_name};
use crate::engine::history::{self as rules, Status};
use crate::error::{MigrateError, OrReport};
use pgrx::datum::{Interval, JsonB};
use pgrx::prelude::*;
use pgrx::PgRelation;

/// Writing history needs a primary and a read-write transaction; say so
/// the way PostgreSQL does (SQLSTATE 25006) before touching anything.
fn require_writable(function: &std::ffi::CStr) {
    unsafe {
        pg_sys::PreventCommandIfReadOnly(function.as_ptr());
        pg_sys::PreventCommandDuringRecovery(function.as_ptr());
    }
}

fn flag(arg: &'static str, v: Option<bool>) -> bool {
    v.ok_or(MigrateError::NullArgument { arg }).or_report()
}

/// Check the arguments migrate_start and migrate_record share, then open
/// the run for the caller.
#[allow(clippy::too_many_arguments)]
fn open_run(
    function: &std::ffi::CStr,
    app: Option<&str>,
    name: Option<&str>,
    checksum: Option<&str>,
    description: Option<&str>,
    force: Option<bool>,
    event: &'static str,
    status: Status,
    duration: Option<Interval>,
) -> i64 {
    let app = rules::require_name("app", app).or_report();
    let name = rules::require_name("name", name).or_report();
    let checksum = rules::optional_checksum(checksum).or_report();
    let description = rules::optional_text("description", description).or_report();
    let force = flag("force", force);
    require_writable(function);
    let role = current_role_name();
    let request = log::RunRequest {
        app,
        name,
        checksum,
        description,
        force,
        event,
        status,
        duration,
        role: &role,
    };
    as_owner(|| log::start_run(&request)).or_report()
}

/// Start a run of migration `app.name` and return its run id.  Refused
/// while it runs elsewhere, when already applied (unless `force`), and
/// when `checksum` differs from the last recorded one (unless `force`).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_start(
    app: Option<&str>,
    name: Option<&str>,
    checksum: default!(Option<&str>, NULL),
    description: default!(Option<&str>, NULL),
    force: default!(Option<bool>, false),
) -> i64 {
    open_run(
        c"migrate_start()",
        app,
        name,
        checksum,
        description,
        force,
        "started",
        Status::Running,
        None,
    )
}

/// Record in one call a migration that a tool has already applied.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_record(
    app: Option<&str>,
    name: Option<&str>,
    checksum: default!(Option<&str>, NULL),
    description: default!(Option<&str>, NULL),
    duration: default!(Option<Interval>, NULL),
    force: default!(Option<bool>, false),
) -> i64 {
    if duration.is_some_and(|d| d.is_negative()) {
        MigrateError::Negative { arg: "duration" }.report();
    }
    let run = open_run(
        c"migrate_record()",
        app,
        name,
        checksum,
        description,
        force,
        "recorded",
        Status::Applied,
        duration,
    );
    crate::kinds::queue::gates_may_open(None);
    run
}

/// Finish run `id` as 'applied' or 'failed' (with the error).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_finish(
    id: Option<i64>,
    status: default!(Option<&str>, "'applied'"),
    error: default!(Option<&str>, NULL),
) {
    let run_id = id
        .ok_or(MigrateError::NullArgument { arg: "id" })
        .or_report();
    let (outcome, error) = rules::parse_outcome(status, error).or_report();
    require_writable(c"migrate_finish()");
    let role = current_role_name();
    as_owner(|| log::finish_run(run_id, outcome, error, &role)).or_report();
    crate::kinds::queue::gates_may_open(None);
}

/// Record that applied (or failed) migration `app.name` was reversed.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_unapply(app: Option<&str>, name: Option<&str>, reason: default!(Option<&str>, NULL)) {
    let app = rules::require_name("app", app).or_report();
    let name = rules::require_name("name", name).or_report();
    let reason = rules::optional_text("reason", reason).or_report();
    require_writable(c"migrate_unapply()");
    let role = current_role_name();
    as_owner(|| {
        log::lock(app, name)?;
        let current = log::current(app, name);
        let seq = rules::check_unapply(app, name, current.as_ref())?;
        let run_id = current
            .expect("check_unapply accepts only a known migration")
            .run_id;
        log::append(&NewEvent {
            run_id: Some(run_id),
            app,
            name,
            seq,
            event: "unapplied",
            status: Status::Unapplied,
            checksum: None,
            description: None,
            error: None,
            reason,
            forced: false,
            role: &role,
            duration: None,
        })
    })
    .or_report();
}

/// Is migration `app.name` applied?  Cheap enough for every application
/// start; works on a hot standby.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_applied(app: Option<&str>, name: Option<&str>) -> bool {
    let app = rules::require_name("app", app).or_report();
    let name = rules::require_name("name", name).or_report();
    as_owner(|| log::current(app, name)).is_some_and(|c| c.status == Status::Applied)
}

/// The startup check: returns quietly when `app.name` is applied, raises
/// SQLSTATE 55000 saying what is missing otherwise.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_require(app: Option<&str>, name: Option<&str>) {
    let app = rules::require_name("app", app).or_report();
    let name = rules::require_name("name", name).or_report();
    let current = as_owner(|| log::current(app, name));
    if let Some(e) = rules::require_applied(app, name, current.as_ref()) {
        e.report();
    }
}

/// Import Django's `django_migrations` rows as applied migrations.  Rows
/// already known to pg_migrate are skipped, so a second call imports
/// nothing new.  Returns the number imported.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn migrate_import_django(
    source: default!(Option<PgRelation>, "'django_migrations'::text::regclass"),
) -> i64 {
    let source = source
        .ok_or(MigrateError::NullArgument { arg: "source" })
        .or_report();
    require_writable(c"migrate_import_django()");
    let relname: String =
        Spi::get_one_with_args("SELECT $1::regclass::text", &[source.oid().into()])
            .ok()
            .flatten()
            .unwrap_or_default();
    for column in ["app", "name", "applied"] {
        let present: Option<bool> = Spi::connect(|c| {
            c.select(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                                 WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped)",
                None,
                &[source.oid().into(), column.into()],
            )?
            .first()
            .get_one()
        })
        .ok()
        .flatten();
        if present != Some(true) {
            MigrateError::MissingColumn {
                relation: relname.clone(),
                column,
                purpose: "migrate_import_django() reads a table shaped like Django's django_migrations (app, name, applied).",
            }
            .report();
        }
    }
    // Read as the caller, so the caller's SELECT privilege applies.
    let rows: JsonB = Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT coalesce(jsonb_agg(jsonb_build_object('app', s.app::text, 'name', s.name::text,
                                                              'applied', s.applied)
                                 ORDER BY s.applied, s.app, s.name), '[]')
                   FROM {relname} s"
            ),
            None,
            &[],
        )?
        .first()
        .get_one::<JsonB>()
    })
    .ok()
    .flatten()
    .unwrap_or(JsonB(serde_json::Value::Array(vec![])));
    let role = current_role_name();
    let imported = as_owner(|| log::import(rows, &role, &relname));
    crate::kinds::queue::gates_may_open(None);
    imported
}
