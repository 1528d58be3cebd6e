//! Worker selection, pure: which live workers could run a shard at all (cluster, node, tools),
//! which of them to pick (least loaded with a free slot, preferring another worker than the one
//! that ran the previous attempt), and when a whole kind of shard is saturated.

use std::collections::{HashMap, HashSet};

use ferry_model::task::required_tools;

use crate::records::{ShardRecord, WorkerRecord};

/// Whether a worker could run the shard at all (its cluster, node and tools), busy or not.
pub fn eligible(cluster: &str, shard: &ShardRecord, w: &WorkerRecord) -> bool {
    w.cluster == cluster
        && shard.node.as_ref().is_none_or(|n| *n == w.node)
        && required_tools(&shard.resource, shard.op)
            .iter()
            .all(|any| any.iter().any(|t| w.tools.contains_key(*t)))
}

/// What a shard needs, for messages: `a worker of cluster "dc-a" on node "n1" with pg_dump`.
pub fn describe_wanted(cluster: &str, shard: &ShardRecord) -> String {
    let mut wanted = format!("a worker of cluster {cluster:?}");
    if let Some(node) = &shard.node {
        wanted.push_str(&format!(" on node {node:?}"));
    }
    let tools: Vec<String> = required_tools(&shard.resource, shard.op)
        .iter()
        .map(|any| any.join(" or "))
        .collect();
    if !tools.is_empty() {
        wanted.push_str(&format!(" with {}", tools.join(" and ")));
    }
    wanted
}

/// Shards of one kind are interchangeable for placement: once every capable worker of a kind
/// is busy, later shards of that kind wait without a search (loads only grow within a pass).
pub type KindKey = (String, Option<String>, String, &'static str);

/// The placement kind of a shard of a job in `cluster`.
pub fn kind_of(cluster: &str, shard: &ShardRecord) -> KindKey {
    (
        cluster.to_owned(),
        shard.node.clone(),
        shard.kind.clone(),
        shard.op.as_str(),
    )
}

/// What placement knows during one pass: live workers, the shards each holds, saturated kinds.
#[derive(Debug, Default)]
pub struct Pool {
    pub workers: Vec<WorkerRecord>,
    pub load: HashMap<String, u32>,
    pub saturated: HashSet<KindKey>,
}

/// Where a shard goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// To this worker (its load is counted at once).
    Worker(WorkerRecord),
    /// Every worker that could run it is busy: it waits its turn.
    Busy,
    /// No live worker could run it at all.
    Nobody,
}

impl Pool {
    /// Places a shard, counting it on the chosen worker so the next pick spreads the load.
    pub fn place(&mut self, cluster: &str, shard: &ShardRecord) -> Placement {
        if shard.op == ferry_model::task::ShardOp::Stream {
            return self.place_stream(cluster, shard);
        }
        let kind = kind_of(cluster, shard);
        if self.saturated.contains(&kind) {
            return Placement::Busy;
        }
        let load = |w: &WorkerRecord| self.load.get(&w.id).copied().unwrap_or(0);
        let pick = self
            .workers
            .iter()
            .filter(|w| eligible(cluster, shard, w))
            .filter(|w| load(w) < w.max_shards)
            .min_by_key(|w| (w.id == shard.worker, load(w), w.id.clone()))
            .cloned();
        match pick {
            Some(w) => {
                *self.load.entry(w.id.clone()).or_default() += 1;
                Placement::Worker(w)
            }
            None if self.workers.iter().any(|w| eligible(cluster, shard, w)) => {
                self.saturated.insert(kind);
                Placement::Busy
            }
            None => Placement::Nobody,
        }
    }
}

impl Pool {
    /// A log stream takes no slot: any eligible worker, another than the one it was lost on
    /// when there is a choice, else the least loaded.
    fn place_stream(&self, cluster: &str, shard: &ShardRecord) -> Placement {
        let load = |w: &WorkerRecord| self.load.get(&w.id).copied().unwrap_or(0);
        self.workers
            .iter()
            .filter(|w| eligible(cluster, shard, w))
            .min_by_key(|w| (w.id == shard.worker, load(w), w.id.clone()))
            .cloned()
            .map_or(Placement::Nobody, Placement::Worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::tests::shard;
    use ferry_model::task::{Resource, ShardOp};

    fn worker(id: &str, cluster: &str, node: &str, max: u32, tools: &[&str]) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            cluster: cluster.into(),
            node: node.into(),
            max_shards: max,
            tools: tools.iter().map(|t| (t.to_string(), "v".into())).collect(),
            version: String::new(),
            lease: 1,
            registered_at_ms: 0,
            session_sha256: String::new(),
            token: String::new(),
        }
    }

    fn pg_shard() -> ShardRecord {
        let spec: ferry_model::app::DatabaseSpec = serde_json::from_value(serde_json::json!({
            "name": "main", "engine": "postgres", "databases": ["shop"]
        }))
        .unwrap();
        ShardRecord {
            kind: "postgres".into(),
            resource: Resource::Database {
                spec,
                database: Some("shop".into()),
            },
            ..shard("db")
        }
    }

    #[test]
    fn eligibility_is_cluster_node_and_tools() {
        let w = worker("w1", "dc-a", "n1", 2, &["pg_dump", "psql"]);
        assert!(eligible("dc-a", &shard("v"), &w));
        assert!(!eligible("dc-b", &shard("v"), &w));
        let pinned = ShardRecord {
            node: Some("n2".into()),
            ..shard("v")
        };
        assert!(!eligible("dc-a", &pinned, &w));
        assert!(eligible("dc-a", &pg_shard(), &w));
        let restore = ShardRecord {
            op: ShardOp::Restore,
            ..pg_shard()
        };
        assert!(!eligible("dc-a", &restore, &w), "pg_restore is missing");
        assert!(describe_wanted("dc-a", &restore).contains("pg_restore"));
    }

    #[test]
    fn the_least_loaded_worker_is_picked_and_load_spreads() {
        let mut pool = Pool {
            workers: vec![
                worker("w1", "dc-a", "n1", 2, &[]),
                worker("w2", "dc-a", "n2", 2, &[]),
            ],
            ..Default::default()
        };
        pool.load.insert("w1".into(), 1);
        let picks: Vec<String> = (0..3)
            .map(|_| match pool.place("dc-a", &shard("v")) {
                Placement::Worker(w) => w.id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(picks, ["w2", "w1", "w2"]);
        assert_eq!(pool.place("dc-a", &shard("v")), Placement::Busy);
        assert!(pool.saturated.contains(&kind_of("dc-a", &shard("v"))));
        assert_eq!(pool.place("dc-b", &shard("v")), Placement::Nobody);
    }

    #[test]
    fn a_stream_takes_no_slot_and_goes_to_another_worker_than_the_one_it_was_lost_on() {
        let mut pool = Pool {
            workers: vec![
                worker("w1", "dc-a", "n1", 1, &[]),
                worker("w2", "dc-a", "n2", 1, &[]),
            ],
            ..Default::default()
        };
        pool.load.insert("w1".into(), 1);
        pool.load.insert("w2".into(), 1);
        let lost = ShardRecord {
            op: ShardOp::Stream,
            worker: "w2".into(),
            ..shard("s")
        };
        // Every slot is taken, yet the stream is placed, and not on the worker it was lost on.
        match pool.place("dc-a", &lost) {
            Placement::Worker(w) => assert_eq!(w.id, "w1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.load["w1"], 1, "a stream counts on no slot");
        assert_eq!(pool.place("dc-b", &lost), Placement::Nobody);
    }

    #[test]
    fn a_retry_prefers_another_worker() {
        let mut pool = Pool {
            workers: vec![
                worker("w1", "dc-a", "n1", 2, &[]),
                worker("w2", "dc-a", "n2", 2, &[]),
            ],
            ..Default::default()
        };
        pool.load.insert("w2".into(), 1);
        let retry = ShardRecord {
            worker: "w1".into(),
            ..shard("v")
        };
        assert_eq!(
            pool.place("dc-a", &retry),
            Placement::Worker(pool.workers[1].clone())
        );
    }
}
