//! Where a migration stands, as the history log says: the types the rules
//! (`history`) and the error messages (`error`) share.

/// The state of a migration after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Applied,
    Failed,
    Unapplied,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Applied => "applied",
            Status::Failed => "failed",
            Status::Unapplied => "unapplied",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "running" => Some(Status::Running),
            "applied" => Some(Status::Applied),
            "failed" => Some(Status::Failed),
            "unapplied" => Some(Status::Unapplied),
            _ => None,
        }
    }
}

/// The latest event of one migration, as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub status: Status,
    pub seq: i32,
    pub run_id: i64,
    /// When the event happened, already formatted for messages.
    pub at: String,
    pub role: String,
    pub pid: i32,
    /// Whether backend `pid` still exists (meaningful while running).
    pub backend_alive: bool,
    pub error: Option<String>,
    pub reason: Option<String>,
}
