//! Every error pg_migrate raises, and the one place that turns it into a
//! PostgreSQL error: SQLSTATE, message, detail and hint.
//!
//! The enum itself is plain Rust so the pure logic in `engine` can return it
//! and be tested with `cargo test`; `report()` is the bridge to `ereport`.

use crate::engine::migration::{Current, Status};
pub use crate::sys::sqlstate_code;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgLogLevel;
use thiserror::Error;

/// What a DBA sees when a call is refused.  Messages follow PostgreSQL's
/// style: lower case, no final period; details and hints are sentences.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MigrateError {
    #[error("argument \"{arg}\" must not be NULL")]
    NullArgument { arg: &'static str },

    #[error("argument \"{arg}\" must not be empty")]
    EmptyArgument { arg: &'static str },

    #[error("argument \"{arg}\" is too long")]
    TooLong {
        arg: &'static str,
        len: usize,
        max: usize,
    },

    #[error("argument \"{arg}\" contains a control character")]
    ControlCharacter { arg: &'static str },

    #[error("invalid value for argument \"{arg}\": \"{value}\"")]
    InvalidValue {
        arg: &'static str,
        value: String,
        allowed: &'static str,
    },

    #[error("argument \"{arg}\" must not be negative")]
    Negative { arg: &'static str },

    #[error("an error message can only be recorded with status 'failed'")]
    ErrorWithoutFailure,

    #[error("migration run {run_id} does not exist")]
    UnknownRun { run_id: i64 },

    #[error("migration {app}.{name} has no history")]
    UnknownMigration { app: String, name: String },

    #[error("migration run {run_id} ({app}.{name}) is already finished")]
    RunFinished {
        run_id: i64,
        app: String,
        name: String,
        status: String,
        at: String,
    },

    #[error("migration {app}.{name} is already applied")]
    AlreadyApplied {
        app: String,
        name: String,
        run_id: i64,
        at: String,
        role: String,
    },

    #[error("migration {app}.{name} is already running")]
    AlreadyRunning {
        app: String,
        name: String,
        run: Box<Current>,
    },

    #[error("migration {app}.{name} is being changed by another session")]
    Busy {
        app: String,
        name: String,
        pid: Option<i32>,
    },

    #[error("migration {app}.{name} was changed by another session at the same time")]
    ConcurrentChange { app: String, name: String },

    #[error("checksum of migration {app}.{name} does not match its earlier run")]
    ChecksumMismatch {
        app: String,
        name: String,
        recorded: String,
        given: String,
        run_id: i64,
    },

    #[error("migration {app}.{name} is not applied")]
    NotApplied {
        app: String,
        name: String,
        state: Option<Box<Current>>,
    },

    #[error("migration {app}.{name} cannot be unapplied while it is {status}")]
    CannotUnapply {
        app: String,
        name: String,
        status: String,
    },

    #[error("migration {app}.{name} is already unapplied")]
    AlreadyUnapplied {
        app: String,
        name: String,
        at: String,
        role: String,
    },

    #[error("relation {relation} has no column \"{column}\"")]
    MissingColumn {
        relation: String,
        column: &'static str,
        purpose: &'static str,
    },

    #[error("argument \"{arg}\" is out of range: {value}")]
    OutOfRange {
        arg: &'static str,
        value: String,
        allowed: &'static str,
    },

    #[error("job {job_id} does not exist")]
    UnknownJob { job_id: i64 },

    #[error("permission denied for job {job_id}")]
    NotJobOwner { job_id: i64, owner: String },

    #[error("job {job_id} cannot be {action}: it is {state}")]
    JobState {
        job_id: i64,
        action: &'static str,
        state: &'static str,
        hint: &'static str,
    },

    #[error("job {job_id} is being run by backend {pid}")]
    JobDriven { job_id: i64, pid: i32, by: String },

    #[error("job {job_id} cannot start yet: it {reason}")]
    JobGated { job_id: i64, reason: String },

    #[error("definition is not one table constraint")]
    BadConstraint { found: String },

    #[error("migrate_add_constraint() does not add {what}")]
    ConstraintKind { what: String, instead: &'static str },

    #[error("constraint \"{name}\" of relation {relation} already exists")]
    ConstraintExists { name: String, relation: String },

    #[error("table {relation} has a primary key already")]
    HasPrimaryKey { relation: String },

    #[error("{relation} has no index named {index}")]
    NotAnIndexOf { index: String, relation: String },

    #[error("{relation} is not a table")]
    NotATable {
        relation: String,
        kind: &'static str,
    },

    #[error("{what} cannot be backfilled")]
    CannotBackfill { what: String, why: String },

    #[error("set_clause assigns key column \"{column}\"")]
    KeyInSet { column: String },

    #[error("permission denied for partition {partition}")]
    PartitionPrivilege {
        partition: String,
        privilege: &'static str,
        role: String,
    },

    #[error("{arg} is not a valid {expected}")]
    BadClause {
        arg: &'static str,
        expected: &'static str,
        found: String,
    },

    #[error("set_clause and where_clause must not add {what} to the UPDATE")]
    Smuggled { what: &'static str },

    #[error("a WHERE clause is required to backfill {relation}, which has no primary key")]
    NeedsWhere { relation: String },

    #[error("{what} cannot run inside a transaction block")]
    InTransactionBlock { what: &'static str },

    #[error("job {job_id} failed: {error}")]
    JobFailed {
        job_id: i64,
        sqlstate: String,
        error: String,
        detail: Option<String>,
    },

    #[error("job {job_id} was cancelled")]
    JobCancelled { job_id: i64 },

    #[error("job {job_id} has not finished after {waited}")]
    WaitTimeout {
        job_id: i64,
        waited: String,
        state: String,
    },

    #[error("migration {app}.{name} cannot be linked to a job: {why}")]
    BadMigrationLink {
        app: String,
        name: String,
        why: String,
    },

    #[error("index_sql must be one CREATE INDEX statement")]
    NotCreateIndex { found: String },

    #[error("{what} cannot be indexed concurrently")]
    CannotIndex { what: String, why: String },

    #[error("access method \"{am}\" does not support {what}")]
    IndexAmUnsupported { am: String, what: &'static str },

    #[error("must be owner of table {relation}")]
    NotTableOwner { relation: String, to: &'static str },

    #[error("column \"{column}\" of relation {relation} does not exist")]
    NoSuchColumn { relation: String, column: String },

    #[error("{relation} is not a table")]
    NotATableFor {
        relation: String,
        kind: &'static str,
        what: &'static str,
    },

    #[error(
        "column {column} of {relation} cannot change its type in place: other objects depend on it"
    )]
    InTheWay {
        relation: String,
        column: String,
        list: String,
    },

    #[error("column {column} of {relation} is of type {type_name} already")]
    AlreadyOfType {
        relation: String,
        column: String,
        type_name: String,
    },

    #[error("{what} cannot be changed by a job")]
    CannotChange { what: String, why: &'static str },

    #[error("a {key} of Citus distributed table {relation} must include its distribution column {column}")]
    CitusKey {
        key: String,
        relation: String,
        column: String,
    },

    #[error("{relation} is a partitioned table")]
    PartitionedTable {
        relation: String,
        why: &'static str,
        instead: &'static str,
    },

    #[error("relation \"{name}\" already exists")]
    IndexExists { name: String },

    #[error("column \"{column}\" named in the index does not exist")]
    NoSuchIndexColumn { column: String },

    #[error("{relation} is not an index")]
    NotAnIndex {
        relation: String,
        kind: &'static str,
    },

    #[error(
        "cannot drop index {index} because constraint {constraint} on table {table} requires it"
    )]
    IndexOfConstraint {
        index: String,
        constraint: String,
        table: String,
    },

    #[error("job {job_id} is an index job, which only a background worker can run")]
    NeedsWorker { job_id: i64 },
}

/// What to pass for an argument that was missing or empty.
fn argument_hint(arg: &str) -> Option<&'static str> {
    Some(match arg {
        "app" => "Pass the name of the application or component the migration belongs to, such as 'shop'.",
        "name" => "Pass the migration's name, such as '0001_initial'.",
        "id" => "Pass the run id that migrate_start() returned.",
        "status" => "Use 'applied' or 'failed'.",
        "checksum" => "Pass NULL when the migration has no checksum.",
        "force" => "Pass true or false.",
        "source" => "Pass the table that holds Django's history, such as 'django_migrations'.",
        "sql" => "Pass the migration script: one or more SQL statements separated by semicolons.",
        "lock_timeout" => "Pass a short timeout, such as '2s', or leave the argument out for its default.",
        "statement_timeout" => "Pass a timeout, such as '10s', or leave the argument out for its default.",
        "plan_id" => "Pass the id that migrate_plan() returned.",
        _ => return None,
    })
}

/// Quote a SQL literal for a hint the DBA can paste into psql.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl MigrateError {
    /// The five-character SQLSTATE, chosen on purpose for each case.
    pub fn sqlstate(&self) -> &str {
        use MigrateError::*;
        match self {
            NullArgument { .. } => "22004",       // null_value_not_allowed
            EmptyArgument { .. } => "22023",      // invalid_parameter_value
            TooLong { .. } => "22001",            // string_data_right_truncation
            ControlCharacter { .. } => "22023",   // invalid_parameter_value
            InvalidValue { .. } => "22023",       // invalid_parameter_value
            Negative { .. } => "22023",           // invalid_parameter_value
            ErrorWithoutFailure => "22023",       // invalid_parameter_value
            UnknownRun { .. } => "42704",         // undefined_object
            UnknownMigration { .. } => "42704",   // undefined_object
            RunFinished { .. } => "55000",        // object_not_in_prerequisite_state
            AlreadyApplied { .. } => "42710",     // duplicate_object
            AlreadyRunning { .. } => "55006",     // object_in_use
            Busy { .. } => "55006",               // object_in_use
            ConcurrentChange { .. } => "40001",   // serialization_failure
            ChecksumMismatch { .. } => "55000",   // object_not_in_prerequisite_state
            NotApplied { .. } => "55000",         // object_not_in_prerequisite_state
            CannotUnapply { .. } => "55000",      // object_not_in_prerequisite_state
            AlreadyUnapplied { .. } => "55000",   // object_not_in_prerequisite_state
            MissingColumn { .. } => "42703",      // undefined_column
            OutOfRange { .. } => "22023",         // invalid_parameter_value
            UnknownJob { .. } => "42704",         // undefined_object
            NotJobOwner { .. } => "42501",        // insufficient_privilege
            JobState { .. } => "55000",           // object_not_in_prerequisite_state
            JobDriven { .. } => "55006",          // object_in_use
            JobGated { .. } => "55000",           // object_not_in_prerequisite_state
            BadConstraint { .. } => "42601",      // syntax_error
            ConstraintKind { .. } => "0A000",     // feature_not_supported
            ConstraintExists { .. } => "42710",   // duplicate_object
            HasPrimaryKey { .. } => "42P16",      // invalid_table_definition
            NotAnIndexOf { .. } => "42704",       // undefined_object
            NotATable { .. } => "42809",          // wrong_object_type
            CannotBackfill { .. } => "0A000",     // feature_not_supported
            KeyInSet { .. } => "22023",           // invalid_parameter_value
            PartitionPrivilege { .. } => "42501", // insufficient_privilege
            BadClause { .. } => "42601",          // syntax_error
            Smuggled { .. } => "42601",           // syntax_error
            NeedsWhere { .. } => "22023",         // invalid_parameter_value
            InTransactionBlock { .. } => "25001", // active_sql_transaction
            JobFailed { sqlstate, .. } => sqlstate,
            JobCancelled { .. } => "57014",       // query_canceled
            WaitTimeout { .. } => "57014",        // query_canceled
            BadMigrationLink { .. } => "22023",   // invalid_parameter_value
            NotCreateIndex { .. } => "22023",     // invalid_parameter_value
            CannotIndex { .. } => "0A000",        // feature_not_supported
            IndexAmUnsupported { .. } => "0A000", // feature_not_supported
            NotTableOwner { .. } => "42501",      // insufficient_privilege
            IndexExists { .. } => "42P07",        // duplicate_table
            NoSuchIndexColumn { .. } => "42703",  // undefined_column
            NotAnIndex { .. } => "42809",         // wrong_object_type
            IndexOfConstraint { .. } => "2BP01",  // dependent_objects_still_exist
            NeedsWorker { .. } => "55000",        // object_not_in_prerequisite_state
            NoSuchColumn { .. } => "42703",       // undefined_column
            NotATableFor { .. } => "42809",       // wrong_object_type
            PartitionedTable { .. } => "0A000",   // feature_not_supported
            CannotChange { .. } => "0A000",       // feature_not_supported
            CitusKey { .. } => "0A000",           // feature_not_supported
            InTheWay { .. } => "2BP01",           // dependent_objects_still_exist
            AlreadyOfType { .. } => "42P16",      // invalid_table_definition
        }
    }

    /// The primary message (what `Display` prints).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// Facts that explain the error.
    pub fn detail(&self) -> Option<String> {
        use MigrateError::*;
        match self {
            TooLong { len, max, .. } => Some(format!(
                "It has {len} characters; at most {max} are allowed."
            )),
            ControlCharacter { .. } => {
                Some("Tabs, newlines and other control characters are not allowed in names.".into())
            }
            RunFinished { status, at, .. } => Some(format!("It was marked {status} at {at}.")),
            AlreadyApplied {
                run_id, at, role, ..
            } => Some(format!(
                "It was applied at {at} by role {role} (run {run_id})."
            )),
            AlreadyRunning { run: r, .. } => Some(format!(
                "Run {} was started at {} by role {} in backend {}{}.",
                r.run_id,
                r.at,
                r.role,
                r.pid,
                if r.backend_alive {
                    ""
                } else {
                    ", which has since exited"
                }
            )),
            Busy { pid: Some(pid), .. } => Some(format!(
                "Backend {pid} is starting or finishing it in a transaction that has not ended yet."
            )),
            Busy { pid: None, .. } => Some(
                "Another transaction that has not ended yet is starting or finishing it.".into(),
            ),
            ChecksumMismatch {
                recorded,
                given,
                run_id,
                ..
            } => Some(format!(
                "Recorded checksum: {recorded} (run {run_id}). Given checksum: {given}."
            )),
            AlreadyUnapplied { at, role, .. } => {
                Some(format!("It was unapplied at {at} by role {role}."))
            }
            NotJobOwner { job_id, owner } => Some(format!("Job {job_id} belongs to role {owner}.")),
            JobDriven { by, .. } => Some(format!("It is being run by {by}.")),
            BadConstraint { found } => Some(found.clone()),
            InTheWay { list, .. } => Some(format!("In the way: {list}.")),
            NotATable { kind, .. } | NotATableFor { kind, .. } => Some(format!("It is a {kind}.")),
            PartitionedTable { why, .. } | CannotChange { why, .. } => Some((*why).to_string()),
            CitusKey { column, .. } => Some(format!(
                "Citus keeps a key unique shard by shard, and {column} chooses a row's shard."
            )),
            CannotBackfill { why, .. } => Some(why.clone()),
            PartitionPrivilege { privilege, role, .. } => Some(format!(
                "A backfill of a partitioned table updates each partition directly, and PostgreSQL checks a partition's own privileges when it is named: role {role} lacks {privilege} on it."
            )),
            NotCreateIndex { found } => Some(found.clone()),
            CannotIndex { why, .. } => Some(why.clone()),
            NotAnIndex { kind, .. } => Some(format!("It is a {kind}.")),
            NeedsWorker { .. } => Some(
                "pg_migrate is not in shared_preload_libraries, so its workers are not running; CREATE INDEX, DROP INDEX and REINDEX CONCURRENTLY cannot run inside a function or procedure.".into(),
            ),
            BadClause { found, .. } => Some(found.clone()),
            JobFailed { detail, .. } => detail.clone(),
            WaitTimeout { state, .. } => {
                Some(format!("It is {state}; waiting for it does not stop it."))
            }
            NotApplied { state: None, .. } => Some("It has never been recorded.".into()),
            NotApplied { state: Some(s), .. } => Some(match s.status {
                Status::Running => format!(
                    "It is running: run {} was started at {} by role {} in backend {}{}.",
                    s.run_id,
                    s.at,
                    s.role,
                    s.pid,
                    if s.backend_alive {
                        ""
                    } else {
                        ", which has since exited"
                    }
                ),
                Status::Failed => match &s.error {
                    Some(e) => format!("Its last run ({}) failed at {}: {}", s.run_id, s.at, e),
                    None => format!("Its last run ({}) failed at {}.", s.run_id, s.at),
                },
                Status::Unapplied => match &s.reason {
                    Some(r) => format!("It was unapplied at {} by role {}: {}", s.at, s.role, r),
                    None => format!("It was unapplied at {} by role {}.", s.at, s.role),
                },
                Status::Applied => "It is applied.".to_string(),
            }),
            _ => None,
        }
    }

    /// What the DBA can do about it.
    pub fn hint(&self) -> Option<String> {
        use MigrateError::*;
        match self {
            NullArgument { arg } | EmptyArgument { arg } => argument_hint(arg).map(String::from),
            InvalidValue { allowed, .. } => Some(format!("Use {allowed}.")),
            ErrorWithoutFailure => {
                Some("Pass status => 'failed' together with the error, or leave error NULL.".into())
            }
            UnknownRun { .. } => Some(
                "migrate_start() returns the run id; the run_id column of migrate_history shows the latest run of each migration."
                    .into(),
            ),
            UnknownMigration { .. } => Some("migrate_history lists every recorded migration.".into()),
            RunFinished { .. } => {
                Some("A run is finished once; start a new run with migrate_start().".into())
            }
            AlreadyApplied { app, name, .. } => Some(format!(
                "To run it again on purpose, pass force => true; to record that it was reversed, call migrate_unapply({}, {}).",
                literal(app),
                literal(name)
            )),
            AlreadyRunning { run: r, .. } if r.backend_alive => Some(format!(
                "Wait for it to finish; pg_stat_activity shows what backend {} is doing.",
                r.pid
            )),
            AlreadyRunning { run: r, .. } => Some(format!(
                "The session that started it ended without finishing it. Check what it changed, then record the outcome with SELECT migrate_finish({}, 'failed', '...');",
                r.run_id
            )),
            Busy { .. } => Some("Wait for that transaction to end, then try again.".into()),
            ConcurrentChange { .. } => Some("Try again.".into()),
            ChecksumMismatch { .. } => Some(
                "If the migration was changed on purpose, pass force => true; otherwise deploy the version of the migration that ran before."
                    .into(),
            ),
            NotApplied { app, name, state } => Some(match state.as_deref().map(|s| s.status) {
                Some(Status::Running) => format!(
                    "Wait for migration {app}.{name} to finish before starting this version of the application."
                ),
                Some(Status::Failed) => format!(
                    "Fix and rerun migration {app}.{name}; migrate_history shows its error."
                ),
                _ => format!(
                    "Apply migration {app}.{name} before starting this version of the application."
                ),
            }),
            CannotUnapply { status, .. } if status == "running" => Some(
                "Finish the running migration with migrate_finish() first.".into(),
            ),
            CannotUnapply { .. } => Some("Only an applied or failed migration can be unapplied.".into()),
            AlreadyUnapplied { .. } => Some("Nothing to do: migrate_history shows its status.".into()),
            MissingColumn { purpose, .. } => Some((*purpose).to_string()),
            OutOfRange { allowed, .. } => Some(format!("Use {allowed}.")),
            UnknownJob { .. } => Some("migrate_progress lists the jobs you may see.".into()),
            NotJobOwner { owner, .. } => Some(format!(
                "Only role {owner}, its members and superusers may see or control this job."
            )),
            JobState { hint, .. } => Some((*hint).to_string()),
            JobGated { job_id, .. } => Some(format!(
                "It starts by itself once its gates open; CALL migrate_wait({job_id}) waits for it, and migrate_progress shows what it waits for."
            )),
            BadConstraint { .. } => Some(
                "Pass what follows ADD in ALTER TABLE ... ADD, such as 'CHECK (price > 0)', 'FOREIGN KEY (customer_id) REFERENCES customers (id)' or 'CONSTRAINT orders_ref_key UNIQUE (ref)'.".into(),
            ),
            ConstraintKind { instead, .. } => Some((*instead).to_string()),
            InTheWay { .. } => Some(
                "Drop or change what is listed first (and re-create it after the job), or change the type with ALTER TABLE ... ALTER COLUMN ... TYPE in a maintenance window.".into(),
            ),
            AlreadyOfType { .. } => Some("There is nothing to change.".into()),
            ConstraintExists { .. } => Some(
                "Name the new constraint with CONSTRAINT name ..., or drop the old one first.".into(),
            ),
            HasPrimaryKey { .. } => Some(
                "A table has one primary key; add a UNIQUE constraint instead, or drop the old key first.".into(),
            ),
            NotAnIndexOf { .. } => Some(
                "USING INDEX names an index of the same table, in its schema; build one with migrate_create_index('CREATE UNIQUE INDEX ...').".into(),
            ),
            JobDriven { job_id, .. } => Some(format!(
                "Wait for it, or stop it with migrate_pause({job_id}) and run it here afterwards."
            )),
            NotATable { .. } => Some("migrate_backfill() updates ordinary and partitioned tables.".into()),
            PartitionPrivilege { partition, role, .. } => Some(format!(
                "GRANT SELECT, UPDATE ON {partition} TO {role}; (on every partition), or submit the job as the table's owner."
            )),
            KeyInSet { .. } => Some(
                "A backfill walks the table by its key, so the key must not change under it; change key columns with a regular migration."
                    .into(),
            ),
            BadClause { arg, .. } if *arg == "set_clause" => Some(
                "Pass only the assignments of an UPDATE, such as 'summary = left(body, 300), flag = true'.".into(),
            ),
            BadClause { .. } => Some("Pass only the condition of a WHERE clause, such as 'summary IS NULL'.".into()),
            Smuggled { .. } => Some(
                "Pass only assignments in set_clause and only a condition in where_clause; to read other tables, use a subquery in an assignment."
                    .into(),
            ),
            NeedsWhere { .. } => Some(
                "Without a key, batches go by physical position and a row moved by the update can be met again; add a primary key, or pass a where_clause that excludes rows already done, such as 'summary IS NULL'."
                    .into(),
            ),
            InTransactionBlock { what } => Some(format!(
                "{what} commits as it goes; call it on its own, outside BEGIN ... COMMIT."
            )),
            JobFailed { job_id, .. } => Some(format!(
                "Fix the cause, then SELECT migrate_retry({job_id}); it resumes at the batch that failed."
            )),
            JobCancelled { job_id } => Some(format!(
                "SELECT migrate_retry({job_id}) queues it again from where it stopped."
            )),
            WaitTimeout { job_id, .. } => Some(format!("migrate_progress shows how far job {job_id} is.")),
            BadMigrationLink { .. } => Some(
                "Pass migration => ARRAY['app', 'name'] of a migration that is not applied, and have EXECUTE on migrate_start().".into(),
            ),
            NotCreateIndex { .. } => Some(
                "Pass one statement such as 'CREATE INDEX orders_created_idx ON orders (created_at)'; pg_migrate adds CONCURRENTLY."
                    .into(),
            ),
            IndexAmUnsupported { .. } => Some(
                "Use btree, or an access method that supports it (pg_indexam_has_property() tells).".into(),
            ),
            NotTableOwner { to, .. } => Some(format!(
                "Only the table's owner, members of its role and superusers may {to}."
            )),
            IndexExists { .. } => Some(
                "Choose another name, or write CREATE INDEX IF NOT EXISTS to do nothing when it exists.".into(),
            ),
            NoSuchIndexColumn { .. } => Some("\\d of the table lists its columns.".into()),
            NotAnIndex { .. } => Some("Pass an index, such as 'orders_created_idx'.".into()),
            IndexOfConstraint { table, constraint, .. } => Some(format!(
                "ALTER TABLE {table} DROP CONSTRAINT {constraint} drops the constraint and its index."
            )),
            NeedsWorker { .. } => Some(
                "Add pg_migrate to shared_preload_libraries and restart the server; a worker then runs the job.".into(),
            ),
            NoSuchColumn { .. } => Some("\\d of the table lists its columns.".into()),
            NotATableFor { what, .. } => Some(format!("{what} works on ordinary tables.")),
            PartitionedTable { instead, .. } => Some((*instead).to_string()),
            CitusKey { column, .. } => Some(format!(
                "Add {column} to the key, or keep the key on a reference table."
            )),
            _ => None,
        }
    }

    /// This error as a caught one (to keep, report later or raise with a
    /// position).
    pub fn caught(&self) -> crate::sys::Caught {
        crate::sys::Caught {
            sqlstate: self.sqlstate().to_string(),
            message: self.message(),
            detail: self.detail(),
            hint: self.hint(),
        }
    }

    /// Raise this error with a detail of its own.
    pub fn report_with_detail(self, detail: String) -> ! {
        let e = crate::sys::Caught {
            detail: Some(detail),
            ..self.caught()
        };
        crate::sys::raise_at(&e, "", 0, None)
    }

    /// Raise this error as a PostgreSQL ERROR.  Never returns.
    pub fn report(self) -> ! {
        let mut report =
            ErrorReport::new(sqlstate_code(self.sqlstate()), self.message(), "pg_migrate");
        if let Some(d) = self.detail() {
            report = report.set_detail(d);
        }
        if let Some(h) = self.hint() {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) does not return")
    }
}

/// `Result` with the extension's error type.
pub type Result<T> = std::result::Result<T, MigrateError>;

/// Unwrap a result or raise its error in PostgreSQL.
pub trait OrReport<T> {
    fn or_report(self) -> T;
}

impl<T> OrReport<T> for Result<T> {
    fn or_report(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.report(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sqlstate_is_five_characters() {
        let samples = vec![
            MigrateError::NullArgument { arg: "app" },
            MigrateError::UnknownRun { run_id: 1 },
            MigrateError::Busy {
                app: "a".into(),
                name: "b".into(),
                pid: Some(1),
            },
            MigrateError::ConcurrentChange {
                app: "a".into(),
                name: "b".into(),
            },
        ];
        for e in samples {
            assert_eq!(e.sqlstate().len(), 5, "{e:?}");
        }
    }

    #[test]
    fn sqlstates_map_to_postgres_codes() {
        assert_eq!(
            sqlstate_code("55000"),
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        );
        assert_eq!(
            sqlstate_code("42710"),
            pgrx::PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT
        );
        assert_eq!(
            sqlstate_code("55006"),
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_IN_USE
        );
        assert_eq!(
            sqlstate_code("22004"),
            pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED
        );
        assert_eq!(
            sqlstate_code("40001"),
            pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE
        );
    }

    #[test]
    fn literal_doubles_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn too_long_has_counts_in_detail() {
        let e = MigrateError::TooLong {
            arg: "name",
            len: 300,
            max: 255,
        };
        assert_eq!(e.message(), "argument \"name\" is too long");
        assert_eq!(
            e.detail().unwrap(),
            "It has 300 characters; at most 255 are allowed."
        );
        assert_eq!(e.sqlstate(), "22001");
    }

    #[test]
    fn already_applied_hint_is_pasteable() {
        let e = MigrateError::AlreadyApplied {
            app: "shop".into(),
            name: "0002_o'brien".into(),
            run_id: 7,
            at: "2026-01-01 00:00:00+00".into(),
            role: "deploy".into(),
        };
        assert!(e
            .hint()
            .unwrap()
            .contains("migrate_unapply('shop', '0002_o''brien')"));
        assert_eq!(e.sqlstate(), "42710");
    }
}
