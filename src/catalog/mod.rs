//! Access to the extension's own tables (schema `pgmigrate`).
//!
//! Those tables belong to the extension owner and nobody else may touch
//! them.  The API functions run as their caller (SECURITY INVOKER), so a
//! caller's privileges apply to everything the caller asks for, and they
//! step into the owner's identity only for the fixed, parameterised
//! statements in this module, through `as_owner`.

pub mod builds;
pub mod history;
pub mod jobs;

use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::CStr;

thread_local! {
    /// (extension oid, its owner) for this backend; re-read when the
    /// extension is dropped and created again.
    static OWNER: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
}

fn extension_owner() -> pg_sys::Oid {
    let ext = unsafe { pg_sys::get_extension_oid(c"pg_migrate".as_ptr(), false) };
    if let Some((cached_ext, owner)) = OWNER.get() {
        if cached_ext == ext {
            return owner;
        }
    }
    let owner = crate::sys::pinned(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT extowner FROM pg_catalog.pg_extension WHERE oid = $1",
                    None,
                    &[ext.into()],
                )?
                .first()
                .get_one::<pg_sys::Oid>()
        })
    })
    .ok()
    .flatten()
    .expect("pg_migrate is installed, so pg_extension has its row");
    OWNER.set(Some((ext, owner)));
    owner
}

/// Run `f` as the extension owner (like a SECURITY DEFINER function would),
/// with `search_path` pinned to `pg_catalog, pg_temp`, then switch back to
/// the caller and the caller's settings.  No statement run as the owner can
/// be steered by objects in the caller's schemas.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    unsafe {
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
    let owner = extension_owner();
    let identity = crate::sys::Identity::become_role(owner, false);
    let r = f();
    drop(identity);
    // On an ERROR, transaction or subtransaction abort pops the level.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    r
}

/// Name of a role, or its oid in brackets when it no longer exists.
pub fn role_name(role: pg_sys::Oid) -> String {
    let name = unsafe { pg_sys::GetUserNameFromId(role, true) };
    if name.is_null() {
        format!("(dropped role {})", role.to_u32())
    } else {
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }
}

/// `current_user` of the caller.
pub fn current_role_name() -> String {
    role_name(unsafe { pg_sys::GetUserId() })
}

/// SPI failures other than a PostgreSQL ERROR (which unwinds on its own)
/// are bugs in our SQL: raise them as internal errors with the statement.
pub trait SpiOrBug<T> {
    fn or_bug(self, what: &str) -> T;
}

impl<T> SpiOrBug<T> for Result<T, pgrx::spi::SpiError> {
    fn or_bug(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => pgrx::error!("pg_migrate internal error while {what}: {e}"),
        }
    }
}

/// Run one writing statement of our own catalog; a failure is a bug.
pub fn write(sql: &str, args: &[pgrx::datum::DatumWithOid], what: &str) {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ())).or_bug(what)
}

/// The extension is installed here, in a version that has the job table
/// (a database may still run an older version until ALTER EXTENSION UPDATE).
pub fn installed() -> bool {
    unsafe {
        if pg_sys::get_extension_oid(c"pg_migrate".as_ptr(), true) == pg_sys::Oid::INVALID {
            return false;
        }
        let nsp = pg_sys::get_namespace_oid(c"pgmigrate".as_ptr(), true);
        nsp != pg_sys::Oid::INVALID
            && pg_sys::get_relname_relid(c"jobs".as_ptr(), nsp) != pg_sys::Oid::INVALID
    }
}
