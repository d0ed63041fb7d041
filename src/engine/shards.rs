//! Where the rows of a distributed (Citus) table live: its shards, each on
//! a node, and what a coordinator needs to tell of a node's answers.

use serde::{Deserialize, Serialize};

/// Where a slice's shard lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteShard {
    pub shard_id: i64,
    /// The shard table's schema and name.
    pub schema: String,
    pub table: String,
    pub host: String,
    pub port: i32,
    /// The schema of pg_migrate on the nodes (the coordinator's).
    pub extension_schema: String,
    /// The lane of the job the shard is in: the shards of one lane are on
    /// one node, which runs them one after another.  None: the shard's job
    /// is sent when its slice starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<i32>,
}

/// Put shards in lanes when `parallel` lets every node run at least one:
/// each node gets `parallel / nodes` lanes (at least one), its shards dealt
/// among them in order.  With fewer lanes than nodes, no lanes.
pub fn assign_lanes(shards: &mut [RemoteShard], parallel: i64) {
    let mut nodes: Vec<String> = Vec::new();
    for s in shards.iter() {
        if !nodes.contains(&s.node()) {
            nodes.push(s.node());
        }
    }
    if nodes.is_empty() || parallel < nodes.len() as i64 {
        return;
    }
    let per_node = (parallel / nodes.len() as i64).max(1) as i32;
    let mut dealt = vec![0i32; nodes.len()];
    for s in shards.iter_mut() {
        let n = nodes.iter().position(|x| *x == s.node()).unwrap_or(0);
        s.lane = Some(n as i32 * per_node + dealt[n] % per_node);
        dealt[n] += 1;
    }
}

impl RemoteShard {
    pub fn node(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Order shards so that nodes take turns, each node's shards kept in order.
pub fn interleave(shards: &mut Vec<RemoteShard>) {
    let mut nodes: Vec<String> = Vec::new();
    for s in shards.iter() {
        if !nodes.contains(&s.node()) {
            nodes.push(s.node());
        }
    }
    let mut queues: Vec<std::collections::VecDeque<RemoteShard>> = nodes
        .iter()
        .map(|n| shards.iter().filter(|s| &s.node() == n).cloned().collect())
        .collect();
    shards.clear();
    while queues.iter().any(|q| !q.is_empty()) {
        for q in queues.iter_mut() {
            if let Some(s) = q.pop_front() {
                shards.push(s);
            }
        }
    }
}

/// Is this message of master_run_on_worker about the connection rather
/// than the command?  What the node's server reports starts with its
/// severity ("ERROR:  ...", "FATAL:  ..."): an error of the command, unless
/// it says the server is going away or not ready.  Anything else comes from
/// the connection itself (it could not be made, or broke: "SSL SYSCALL
/// error: EOF detected", "server closed the connection unexpectedly").
pub fn connection_trouble(message: &str) -> bool {
    const GOING_AWAY: [&str; 5] = [
        "terminating connection",
        "the database system is",
        "server closed",
        "could not connect",
        "connection to server",
    ];
    let m = message.trim_start();
    if m.starts_with("ERROR:") || m.starts_with("FATAL:") || m.starts_with("PANIC:") {
        let lower = m.to_lowercase();
        GOING_AWAY.iter().any(|s| lower.contains(s))
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: i64, port: i32) -> RemoteShard {
        RemoteShard {
            shard_id: id,
            schema: "public".into(),
            table: format!("t_{id}"),
            host: "h".into(),
            port,
            extension_schema: "public".into(),
            lane: None,
        }
    }

    #[test]
    fn lanes_stay_on_one_node() {
        let mut s = vec![
            shard(1, 1),
            shard(2, 2),
            shard(3, 1),
            shard(4, 2),
            shard(5, 1),
        ];
        assign_lanes(&mut s, 2);
        let lanes: Vec<Option<i32>> = s.iter().map(|s| s.lane).collect();
        assert_eq!(lanes, vec![Some(0), Some(1), Some(0), Some(1), Some(0)]);
        assign_lanes(&mut s, 4);
        let lanes: Vec<Option<i32>> = s.iter().map(|s| s.lane).collect();
        assert_eq!(lanes, vec![Some(0), Some(2), Some(1), Some(3), Some(0)]);
        let mut t = vec![shard(1, 1), shard(2, 2)];
        assign_lanes(&mut t, 1);
        assert!(t.iter().all(|s| s.lane.is_none()));
    }

    #[test]
    fn nodes_take_turns() {
        let mut s = vec![
            shard(1, 1),
            shard(2, 1),
            shard(3, 1),
            shard(4, 2),
            shard(5, 2),
        ];
        interleave(&mut s);
        let ids: Vec<i64> = s.iter().map(|s| s.shard_id).collect();
        assert_eq!(ids, vec![1, 4, 2, 5, 3]);
    }

    #[test]
    fn connection_messages_are_told_from_errors() {
        assert!(connection_trouble("failed to connect to h:5432"));
        assert!(connection_trouble(
            "server closed the connection unexpectedly"
        ));
        assert!(connection_trouble("SSL SYSCALL error: EOF detected"));
        assert!(connection_trouble(
            "FATAL:  the database system is in recovery mode"
        ));
        assert!(connection_trouble(
            "FATAL:  terminating connection due to administrator command"
        ));
        assert!(!connection_trouble(
            "ERROR:  permission denied for table t_1"
        ));
        assert!(!connection_trouble("ERROR:  column \"x\" does not exist"));
        assert!(!connection_trouble("FATAL:  role \"x\" does not exist"));
    }
}
