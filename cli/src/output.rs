//! Printing: tables for people, one JSON document for programs.

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use ferry_proto::v1;
use serde_json::{Value, json};

/// Human size: `1.2 GiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// Local-free timestamp: `2026-11-21 10:35:00Z`, or `-`.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// RFC 3339 for JSON, or null.
pub fn time_json(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .map(|t| Value::String(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

/// `12s`, `3m 4s`, or `-`.
pub fn duration(start_ms: i64, end_ms: i64) -> String {
    if start_ms <= 0 {
        return "-".into();
    }
    let end = if end_ms > 0 {
        end_ms
    } else {
        ferry_model::now_ms()
    };
    let secs = ((end - start_ms).max(0) / 1000) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// A table without borders, like kubectl's.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_string()));
    t
}

/// Prints a table, trimming the padding comfy-table leaves at line ends.
pub fn print_table(t: &Table) {
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// Prints one JSON document.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub use ferry_proto::names::{is_final, job_state, shard_state};

fn kind(k: i32) -> &'static str {
    match v1::JobKind::try_from(k).unwrap_or(v1::JobKind::Unspecified) {
        v1::JobKind::Backup => "backup",
        v1::JobKind::Restore => "restore",
        v1::JobKind::Verify => "verify",
        v1::JobKind::Stream => "stream",
        v1::JobKind::Unspecified => "unknown",
    }
}

/// A job as JSON: `id`, `state`, `app`, `team`, `shards`, `bytes` and everything else.
pub fn job_json(j: &v1::Job) -> Value {
    json!({
        "id": j.id,
        "kind": kind(j.kind),
        "state": job_state(j.state),
        "team": j.team,
        "app": j.app,
        "cluster": j.cluster,
        "storage": j.storage,
        "bytes": j.bytes,
        "bytes_total": j.bytes_total,
        "stored_bytes": j.stored_bytes,
        "created_at": time_json(j.created_at_ms),
        "started_at": time_json(j.started_at_ms),
        "finished_at": time_json(j.finished_at_ms),
        "message": j.message,
        "backup_id": if j.backup_id.is_empty() { Value::Null } else { j.backup_id.clone().into() },
        "target_app": if j.target_app.is_empty() { Value::Null } else { j.target_app.clone().into() },
        "labels": j.labels,
        "trigger": j.trigger,
        "expires_at": time_json(j.expires_at_ms),
        "trace_id": j.trace_id,
        "phase": j.phase,
        "signer": j.signer,
        "data_only": j.data_only,
        "safety_backup": if j.safety_backup.is_empty() { Value::Null } else { j.safety_backup.clone().into() },
        "shards": j.shards.iter().map(|s| json!({
            "id": s.id,
            "component": s.component,
            "kind": s.kind,
            "resource": s.resource,
            "phase": s.phase,
            "state": shard_state(s.state),
            "attempt": s.attempt,
            "worker": s.worker,
            "bytes": s.bytes_done,
            "bytes_total": s.bytes_total,
            "stored_bytes": s.stored_bytes,
            "sha256": s.sha256,
            "object_key": s.object_key,
            "tool_version": s.tool_version,
            "detail": s.detail,
            "started_at": time_json(s.started_at_ms),
            "finished_at": time_json(s.finished_at_ms),
            "error": s.error,
        })).collect::<Vec<_>>(),
    })
}

/// A job for people: a summary, then its shards.
pub fn print_job(j: &v1::Job) {
    println!("{}:\t{}", capitalized(kind(j.kind)), j.id);
    println!("State:\t{}", job_state(j.state));
    println!("App:\t{} (team {}, cluster {})", j.app, j.team, j.cluster);
    if !j.backup_id.is_empty() {
        println!("Backup:\t{}", j.backup_id);
    }
    if !j.safety_backup.is_empty() {
        println!(
            "Safety backup:\t{} (the target as it was; restore it to roll back)",
            j.safety_backup
        );
    }
    println!("Storage:\t{}", j.storage);
    if !j.signer.is_empty() {
        println!("Signed by:\t{}", j.signer);
    }
    if j.data_only {
        println!(
            "Data only:\tyes (not signed by a trusted installation: no exec command or hook from its manifest, setuid/setgid cleared)"
        );
    }
    if !j.trace_id.is_empty() {
        println!("Trace:\t{}", j.trace_id);
    }
    println!(
        "Size:\t{} read, {} stored",
        size(j.bytes),
        size(j.stored_bytes)
    );
    println!("Created:\t{}", time(j.created_at_ms));
    println!("Duration:\t{}", duration(j.started_at_ms, j.finished_at_ms));
    if !j.labels.is_empty() {
        let mut labels: Vec<_> = j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        println!("Labels:\t{}", labels.join(", "));
    }
    if !j.message.is_empty() {
        println!("Message:\t{}", j.message);
    }
    println!();
    let mut t = table(&[
        "SHARD", "KIND", "PHASE", "STATE", "WORKER", "ATTEMPT", "SIZE", "STORED", "SHA256",
        "DURATION", "ERROR",
    ]);
    for s in &j.shards {
        t.add_row(vec![
            s.id.clone(),
            s.kind.clone(),
            s.phase.clone(),
            shard_state(s.state).to_owned(),
            s.worker.clone(),
            s.attempt.to_string(),
            size(s.bytes_done),
            size(s.stored_bytes),
            s.sha256.chars().take(12).collect(),
            duration(s.started_at_ms, s.finished_at_ms),
            s.error.clone(),
        ]);
    }
    print_table(&t);
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// One line about a job's progress, for logs and non-terminal output.
pub fn progress_line(j: &v1::Job) -> String {
    let done = j
        .shards
        .iter()
        .filter(|s| s.state == v1::ShardState::Succeeded as i32)
        .count();
    let total = if j.bytes_total > 0 {
        format!(" of {}", size(j.bytes_total))
    } else {
        String::new()
    };
    let mut line = format!(
        "{} {} {}: {done}/{} shards, {}{total}",
        kind(j.kind),
        j.id,
        job_state(j.state),
        j.shards.len(),
        size(j.bytes),
    );
    if !j.message.is_empty() {
        line.push_str(&format!(" — {}", j.message));
    }
    line
}
