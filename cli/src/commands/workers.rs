//! `ferry worker list`, `ferry cluster list`

use ferry_proto::v1;
use serde_json::json;

use super::Ctx;
use crate::exit::CliResult;
use crate::output::{self, print_json, print_table, table};

/// Lists live workers.
pub async fn list_workers(ctx: &mut Ctx, cluster: Option<String>) -> CliResult {
    let workers = ctx
        .client
        .list_workers(v1::ListWorkersRequest {
            cluster: cluster.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .workers;
    if ctx.json() {
        let list: Vec<_> = workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.id, "cluster": w.cluster, "node": w.node, "max_shards": w.max_shards,
                    "running_shards": w.running_shards, "tools": w.tools, "version": w.version,
                    "registered_at": output::time_json(w.registered_at_ms),
                    "last_heartbeat": output::time_json(w.last_heartbeat_ms),
                })
            })
            .collect();
        print_json(&json!({ "workers": list }));
        return Ok(());
    }
    let mut t = table(&["ID", "CLUSTER", "NODE", "SHARDS", "TOOLS", "LAST HEARTBEAT"]);
    for w in &workers {
        let mut tools: Vec<_> = w.tools.keys().cloned().collect();
        tools.sort();
        t.add_row(vec![
            w.id.clone(),
            w.cluster.clone(),
            w.node.clone(),
            format!("{}/{}", w.running_shards, w.max_shards),
            if tools.is_empty() {
                "-".into()
            } else {
                tools.join(",")
            },
            output::time(w.last_heartbeat_ms),
        ]);
    }
    print_table(&t);
    Ok(())
}

/// Lists clusters with live workers.
pub async fn list_clusters(ctx: &mut Ctx) -> CliResult {
    let clusters = ctx
        .client
        .list_clusters(v1::ListClustersRequest {})
        .await?
        .into_inner()
        .clusters;
    if ctx.json() {
        let list: Vec<_> = clusters
            .iter()
            .map(|c| json!({"name": c.name, "workers": c.workers, "capacity": c.capacity}))
            .collect();
        print_json(&json!({ "clusters": list }));
        return Ok(());
    }
    let mut t = table(&["NAME", "WORKERS", "CAPACITY"]);
    for c in &clusters {
        t.add_row(vec![
            c.name.clone(),
            c.workers.to_string(),
            c.capacity.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}
