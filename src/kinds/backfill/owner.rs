//! Running a backfill's own statements as its owner.

use crate::catalog::jobs::Job;
use crate::engine::keyset::BackfillSpec;
use crate::sys::{self, Caught, Identity, StatementTimeout};

/// Run `f` as the job's owner with the job's statement timeout, in a
/// subtransaction kept on success (or always rolled back for probes).
pub fn as_job_owner<R>(
    job: &Job,
    spec: &BackfillSpec,
    keep: bool,
    f: impl FnOnce() -> R,
) -> Result<R, Caught> {
    sys::subtransaction(keep, || {
        let _identity = Identity::become_role(job.owner, true);
        let _timeout = StatementTimeout::arm(spec.statement_timeout_ms);
        f()
    })
}
