//! Every setting of pg_migrate (prefix `pg_migrate.`).  What the workers
//! read is re-read on SIGHUP (context Sighup).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Background workers running jobs at once, across all databases.
static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);

/// How often the launcher looks at each database without being asked
/// (new jobs wake it at once; this is the safety net, and the time scale
/// for rescheduling).
static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(60);

/// How long finished jobs, batch logs and migrate_exec attempts are kept
/// (seconds; 0: for ever).  History is never purged.
static RETENTION: GucSetting<i32> = GucSetting::<i32>::new(30 * 24 * 3600);

/// The batch duration adaptive sizing aims at (ms).
static TARGET_BATCH_MS: GucSetting<i32> = GucSetting::<i32>::new(200);
/// Largest adaptive batch (rows).
static MAX_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(100_000);
/// Pause while a standby's replay lag exceeds this (ms; 0: off).
static MAX_REPLAY_LAG: GucSetting<i32> = GucSetting::<i32>::new(5_000);
/// Pause while a replication slot holds back more WAL than this (MB; 0: off).
static MAX_SLOT_WAL: GucSetting<i32> = GucSetting::<i32>::new(5 * 1024);
/// Rows per second a job may update (0: no budget).
static MAX_ROWS_PER_SECOND: GucSetting<i32> = GucSetting::<i32>::new(0);
/// WAL a job may write per second (kB; 0: no budget).
static MAX_WAL_PER_SECOND: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Pause while a VACUUM works on the job's table.
static PAUSE_DURING_VACUUM: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Batch commits wait for their WAL flush (synchronous_commit as set).
static SYNCHRONOUS_BATCHES: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Batches kept in each job's history.
static BATCH_HISTORY: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// What migrate_analyze assumes a rewrite (copy plus index rebuild) and a
/// validating scan get through per second (MB).
static REWRITE_RATE: GucSetting<i32> = GucSetting::<i32>::new(80);
static SCAN_RATE: GucSetting<i32> = GucSetting::<i32>::new(400);

pub fn rewrite_rate() -> i32 {
    REWRITE_RATE.get()
}
pub fn scan_rate() -> i32 {
    SCAN_RATE.get()
}

pub fn target_batch_ms() -> i64 {
    TARGET_BATCH_MS.get() as i64
}
pub fn max_batch_size() -> i64 {
    MAX_BATCH_SIZE.get() as i64
}
pub fn max_replay_lag_ms() -> i64 {
    MAX_REPLAY_LAG.get() as i64
}
pub fn max_slot_wal_bytes() -> i64 {
    MAX_SLOT_WAL.get() as i64 * 1024 * 1024
}
pub fn max_rows_per_second() -> i64 {
    MAX_ROWS_PER_SECOND.get() as i64
}
pub fn max_wal_bytes_per_second() -> i64 {
    MAX_WAL_PER_SECOND.get() as i64 * 1024
}
pub fn pause_during_vacuum() -> bool {
    PAUSE_DURING_VACUUM.get()
}
pub fn synchronous_batches() -> bool {
    SYNCHRONOUS_BATCHES.get()
}
pub fn batch_history() -> i64 {
    BATCH_HISTORY.get() as i64
}

pub fn max_workers() -> i32 {
    MAX_WORKERS.get()
}

pub fn naptime_secs() -> i32 {
    NAPTIME.get()
}

pub fn retention_secs() -> i32 {
    RETENTION.get()
}

pub fn init() {
    GucRegistry::define_int_guc(
        c"pg_migrate.max_workers",
        c"Background workers that run pg_migrate jobs at once, in all databases.",
        c"Each running job uses one worker, which also counts against max_worker_processes. 0 stops new jobs from starting (CALL migrate_run still works).",
        &MAX_WORKERS,
        0,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.naptime",
        c"Seconds between the launcher's routine looks at each database.",
        c"New and resumed jobs wake the launcher at once; this interval only paces the routine checks (databases without the extension are checked ten times less often).",
        &NAPTIME,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.retention",
        c"How long finished jobs, batch logs and migrate_exec attempts are kept.",
        c"The workers purge older ones (a finished job with its batches, skipped rows and index builds). 0 keeps them for ever. Migration history is never purged.",
        &RETENTION,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // Defaults of every job; a job's own options override them.  Superusers
    // may set them per database or role too (ALTER DATABASE ... SET): the
    // workers read them in the job's database.
    GucRegistry::define_int_guc(
        c"pg_migrate.target_batch_ms",
        c"Batch duration that adaptive batch sizing aims at.",
        c"Rows locked by a batch stay locked until it commits: a writer that needs one of them waits at most about this long.",
        &TARGET_BATCH_MS,
        10,
        60_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.max_batch_size",
        c"Largest batch adaptive sizing may choose, in rows.",
        c"",
        &MAX_BATCH_SIZE,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.max_replay_lag",
        c"Jobs pause while a standby's replay lag exceeds this; 0 turns the check off.",
        c"Read from pg_stat_replication before every batch.",
        &MAX_REPLAY_LAG,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.max_slot_wal",
        c"Jobs pause while a replication slot holds back more WAL than this; 0 turns the check off.",
        c"Read from pg_replication_slots before every batch.",
        &MAX_SLOT_WAL,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.max_rows_per_second",
        c"Rows per second a job may cover; 0 means no budget.",
        c"",
        &MAX_ROWS_PER_SECOND,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.max_wal_per_second",
        c"WAL a job may write per second; 0 means no budget.",
        c"",
        &MAX_WAL_PER_SECOND,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_bool_guc(
        c"pg_migrate.pause_during_vacuum",
        c"Jobs pause while a VACUUM (autovacuum or manual) works on their table.",
        c"",
        &PAUSE_DURING_VACUUM,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_migrate.synchronous_batches",
        c"Backfill batches commit with the server's synchronous_commit; off: without waiting for the WAL flush.",
        c"A batch's rows and its job's cursor commit together, so a crash that loses the last batches loses both, and they are done again.",
        &SYNCHRONOUS_BATCHES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.batch_history",
        c"Batches kept in each job's history (migrate_batches).",
        c"Older batches of a job are removed as new ones are recorded.",
        &BATCH_HISTORY,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.rewrite_rate",
        c"MB per second migrate_analyze assumes a table rewrite gets through (heap and indexes).",
        c"Measure it on your hardware (bench/run analyze prints this machine's) and set it for better duration estimates.",
        &REWRITE_RATE,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_migrate.scan_rate",
        c"MB per second migrate_analyze assumes a validating scan reads.",
        c"Measure it on your hardware (bench/run analyze prints this machine's) and set it for better duration estimates.",
        &SCAN_RATE,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pg_migrate".as_ptr()) };
}
