//! What every kind checks first when it takes a step: the job's spec reads,
//! its table and its owner still exist.

use crate::catalog::jobs::{self, Job, Table};
use crate::catalog::{as_owner, role_name};
use crate::sys::Caught;

fn caught(sqlstate: &str, message: String, detail: Option<String>) -> Caught {
    Caught {
        sqlstate: sqlstate.into(),
        message,
        detail,
        hint: None,
    }
}

/// The job's spec, as its kind stored it.
pub fn spec_of<T: serde::de::DeserializeOwned>(job: &Job) -> Result<T, Caught> {
    serde_json::from_value(job.spec.clone()).map_err(|e| {
        caught(
            "XX000",
            format!("job {} has an unreadable spec: {e}", job.id),
            None,
        )
    })
}

/// The job's table, or why the job cannot go on (the table or the role
/// that submitted it is gone).
pub fn table_of(job: &Job) -> Result<Table, Caught> {
    let Some(table) = as_owner(|| jobs::table(job.relid)) else {
        return Err(caught(
            "42P01",
            format!("table {} was dropped", job.relation),
            None,
        ));
    };
    if role_name(job.owner).starts_with("(dropped role") {
        return Err(caught(
            "42704",
            format!("the role that submitted job {} no longer exists", job.id),
            Some("A job runs as the role that submitted it.".into()),
        ));
    }
    Ok(table)
}

/// The job's spec and its table: what every step reads first.
pub fn spec_and_table<T: serde::de::DeserializeOwned>(job: &Job) -> Result<(T, Table), Caught> {
    let spec = spec_of(job)?;
    Ok((spec, table_of(job)?))
}
