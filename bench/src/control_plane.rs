//! Control plane on a real etcd: simulated workers speaking the worker gRPC API (register,
//! heartbeat at the interval the controller returns, the Assignments stream, an immediate
//! successful ShardResult for every assignment) take the shards of many config-only backups.
//! Measured: shards assigned ÷ time from the first CreateBackup until every shard was handed
//! out, and the controller's peak RSS.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_model::task::{ShardOutcome, ShardTask};
use ferry_proto::v1;
use ferry_proto::v1::control_service_client::ControlServiceClient;
use ferry_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::Config;
use crate::procs::{self, Etcd, Ferry};
use crate::report::{Row, Target, Unit};

const CLUSTER: &str = "sim";
const TEAM: &str = "default";
/// Config-only components per app: each is one shard.
const SHARDS_PER_APP: usize = 100;
/// SHA-256 of nothing: the simulated workers write no archive.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What the simulated workers saw.
#[derive(Default)]
struct Counters {
    /// Distinct (job, shard) pairs handed out.
    assigned: Mutex<HashSet<(String, String)>>,
    /// Every Assign event, re-sends and later attempts included.
    events: AtomicU64,
    reports_accepted: AtomicU64,
    reports_refused: AtomicU64,
    report_errors: AtomicU64,
    heartbeat_failures: AtomicU64,
    unreadable_tasks: AtomicU64,
    /// When the `want`-th distinct shard arrived.
    all_assigned_at: Mutex<Option<Instant>>,
    want: usize,
}

impl Counters {
    fn assigned(&self, shard: &v1::ShardRef) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut set) = self.assigned.lock()
            && set.insert((shard.job_id.clone(), shard.shard_id.clone()))
            && set.len() == self.want
            && let Ok(mut at) = self.all_assigned_at.lock()
        {
            *at = Some(Instant::now());
        }
    }

    fn distinct(&self) -> usize {
        self.assigned.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// Adds the join token, and once registered the session, to every call of a simulated worker.
#[derive(Clone)]
struct Credentials {
    token: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    session: Arc<std::sync::OnceLock<(String, String)>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert("authorization", self.token.clone());
        if let Some((id, key)) = self.session.get()
            && let (Ok(id), Ok(key)) = (id.parse(), key.parse())
        {
            md.insert(ferry_proto::WORKER_ID_HEADER, id);
            md.insert(ferry_proto::SESSION_HEADER, key);
        }
        Ok(req)
    }
}

type Client =
    WorkerServiceClient<tonic::service::interceptor::InterceptedService<Channel, Credentials>>;

async fn heartbeat(
    mut client: Client,
    id: String,
    interval: Duration,
    running: Arc<AtomicU32>,
    counters: Arc<Counters>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let beat = v1::HeartbeatRequest {
            worker_id: id.clone(),
            running_shards: running.load(Ordering::Relaxed),
        };
        match client.heartbeat(beat).await {
            Ok(r) if r.get_ref().known => {}
            _ => {
                counters.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One simulated worker: its own connection, session, heartbeats and assignment stream.
async fn sim_worker(
    i: usize,
    url: String,
    token: String,
    counters: Arc<Counters>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(url)?.connect().await?;
    let credentials = Credentials {
        token: format!("Bearer {token}").parse()?,
        session: Default::default(),
    };
    let session = credentials.session.clone();
    let mut client = WorkerServiceClient::with_interceptor(channel, credentials);
    let reg = client
        .register(v1::RegisterRequest {
            cluster: CLUSTER.into(),
            node: format!("sim-{i:04}"),
            max_shards: 2,
            version: "ferry-bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = reg.worker_id;
    let _ = session.set((id.clone(), reg.session_key.clone()));
    let interval = Duration::from_millis(reg.heartbeat_interval_ms.max(100));
    let running = Arc::new(AtomicU32::new(0));
    tokio::spawn(heartbeat(
        client.clone(),
        id.clone(),
        interval,
        running.clone(),
        counters.clone(),
    ));
    let mut stream = client
        .assignments(v1::AssignmentsRequest {
            worker_id: id.clone(),
        })
        .await?
        .into_inner();
    let _ = ready.send(()).await;
    let outcome = serde_json::to_string(&ShardOutcome {
        sha256: EMPTY_SHA256.into(),
        ..Default::default()
    })?;
    while let Some(event) = stream.message().await? {
        let Some(v1::assignment_event::Event::Assign(a)) = event.event else {
            continue;
        };
        let Some(shard) = a.shard else { continue };
        // Read the task as a real worker would.
        if serde_json::from_str::<ShardTask>(&a.task_json).is_err() {
            counters.unreadable_tasks.fetch_add(1, Ordering::Relaxed);
        }
        counters.assigned(&shard);
        running.fetch_add(1, Ordering::Relaxed);
        let (mut client, id, counters, running, outcome) = (
            client.clone(),
            id.clone(),
            counters.clone(),
            running.clone(),
            outcome.clone(),
        );
        tokio::spawn(async move {
            let result = client
                .report_result(v1::ShardResult {
                    worker_id: id,
                    shard: Some(shard),
                    ok: true,
                    outcome_json: outcome,
                    ..Default::default()
                })
                .await;
            running.fetch_sub(1, Ordering::Relaxed);
            let counter = match result {
                Ok(ack) if ack.get_ref().accepted => &counters.reports_accepted,
                Ok(_) => &counters.reports_refused,
                Err(_) => &counters.report_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// `n` config-only apps of `SHARDS_PER_APP` components (the last one smaller) making `shards`.
fn app_specs(shards: usize) -> Vec<(String, String)> {
    let apps = shards.div_ceil(SHARDS_PER_APP);
    (0..apps)
        .map(|a| {
            let name = format!("cp-{a:04}");
            let count = SHARDS_PER_APP.min(shards - a * SHARDS_PER_APP);
            let mut yaml = format!("name: {name}\ncluster: {CLUSTER}\ncomponents:\n");
            for c in 0..count {
                yaml.push_str(&format!(
                    "  - name: c{c:03}\n    config: {{replicas: {c}, image: registry.example.com/{name}/c{c}:1.0}}\n"
                ));
            }
            (name, yaml)
        })
        .collect()
}

/// Request and storage counters of etcd from its /metrics: messages received per gRPC method
/// (`Range`, `Txn`, `LeaseKeepAlive`, …), MVCC puts/ranges/txns/deletes and WAL fsyncs.
fn etcd_counters(url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let key = if let Some(labels) = series.strip_prefix("grpc_server_msg_received_total{") {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix("grpc_method=\""))
                .map(|m| m.trim_end_matches(['"', '}']).to_owned())
        } else {
            [
                "etcd_mvcc_put_total",
                "etcd_mvcc_range_total",
                "etcd_mvcc_txn_total",
                "etcd_mvcc_delete_total",
                "etcd_disk_wal_fsync_duration_seconds_count",
                "etcd_disk_wal_fsync_duration_seconds_sum",
                "etcd_disk_backend_commit_duration_seconds_count",
                "etcd_network_client_grpc_sent_bytes_total",
                "etcd_network_client_grpc_received_bytes_total",
            ]
            .contains(&series)
            .then(|| series.to_owned())
        };
        if let Some(key) = key {
            *out.entry(key).or_insert(0.0) += value;
        }
    }
    Ok(out)
}

/// `name n (x per shard)` for every counter that grew between two scrapes.
fn etcd_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    shards: usize,
) -> String {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            let per = d / shards.max(1) as f64;
            (d > 0.0).then(|| {
                if k.ends_with("bytes_total") {
                    format!(
                        "{k} {:.1} MiB ({:.1} KiB/shard)",
                        d / 1048576.0,
                        per / 1024.0
                    )
                } else if k.ends_with("_sum") {
                    format!("{k} {d:.2} s ({:.2} ms/shard)", per * 1000.0)
                } else {
                    format!("{k} {d:.0} ({per:.1}/shard)")
                }
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_final(state: i32) -> bool {
    [
        v1::JobState::Completed,
        v1::JobState::PartiallyFailed,
        v1::JobState::Failed,
        v1::JobState::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

/// What one control-plane measurement found.
struct Measured {
    /// Distinct shards handed out per second.
    rate: f64,
    /// Mean duration of a reconciler pass while the shards were handed out.
    pass_s: f64,
    controller_peak: f64,
}

/// The rows of the control plane: 10,000 shards over 500 workers, the same with 20,000
/// finished jobs in the catalog, and 100,000 shards over 2,000 workers (smaller in quick mode).
pub fn run(cfg: &Config, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let (shards, workers) = (cfg.shards, cfg.sim_workers);
    let history = if cfg.quick { 500 } else { 20_000 };
    let (big_shards, big_workers) = if cfg.quick {
        (600, 30)
    } else {
        (100_000, 2_000)
    };
    // Each measure stands alone: one that fails becomes an error row, the others still report.
    let plain = measure(cfg, notes, shards, workers, 0);
    let loaded = measure(cfg, notes, shards, workers, history);
    let big = measure(cfg, notes, big_shards, big_workers, 0);
    let rate_label = |shards: usize, workers: usize| {
        format!("control plane: assignments/s ({shards} shards, {workers} workers)")
    };
    let rate_row = |shards: usize, workers: usize, m: &Measured, min: f64| Row {
        measure: rate_label(shards, workers),
        ferry: Some(m.rate),
        baseline: None,
        unit: Unit::PerSecond,
        target: Some(Target::AtLeast(min)),
        timing: true,
        error: None,
    };
    let peak_row = |label: &str, m: &Measured| Row {
        measure: format!("control plane: controller peak RSS ({label})"),
        ferry: Some(m.controller_peak),
        baseline: None,
        unit: Unit::MiB,
        target: Some(Target::AtMost(256.0)),
        timing: false,
        error: None,
    };
    let failed = |label: String, e: &anyhow::Error| Row::error(&label, &format!("{e:#}"));
    let ratio_label = format!("control plane: pass time with {history} finished jobs ÷ with none");
    let mut rows = Vec::new();
    match &plain {
        Ok(m) => {
            rows.push(rate_row(shards, workers, m, 1000.0));
            rows.push(peak_row(&format!("{shards} shards"), m));
        }
        Err(e) => rows.push(failed(rate_label(shards, workers), e)),
    }
    match (&loaded, &plain) {
        (Ok(loaded), Ok(plain)) => {
            notes.push(format!(
                "control plane with {history} finished jobs in the catalog: {:.0} assignments/s \
                 (none: {:.0}), mean reconciler pass {:.1} ms (none: {:.1} ms)",
                loaded.rate,
                plain.rate,
                loaded.pass_s * 1e3,
                plain.pass_s * 1e3
            ));
            rows.push(Row::ratio(&ratio_label, loaded.pass_s, plain.pass_s, 1.20));
        }
        (Err(e), _) | (_, Err(e)) => rows.push(failed(ratio_label, e)),
    }
    match &big {
        Ok(m) => {
            rows.push(rate_row(big_shards, big_workers, m, 2000.0));
            rows.push(peak_row(&format!("{big_shards} shards"), m));
        }
        Err(e) => rows.push(failed(rate_label(big_shards, big_workers), e)),
    }
    Ok(rows)
}

/// Writes `n` finished backups (one shard each) into the catalog, as years of history would.
fn seed_history(etcd_url: &str, n: usize) -> anyhow::Result<()> {
    use ferry_controller::jobs::phase::Phase;
    use ferry_controller::keys;
    use ferry_controller::records::{JobKind, JobRecord, JobState};
    use ferry_controller::store::{Op, Store};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store =
            ferry_controller::store::etcd::EtcdStore::connect(&[etcd_url.to_owned()]).await?;
        let spec = ferry_model::app::AppSpec::from_yaml(
            "name: old\ncluster: sim\ncomponents:\n  - name: c\n    config: {a: 1}\n",
        )?;
        let planned = ferry_model::task::plan_shards(&spec);
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            let mut ops = Vec::new();
            for i in chunk {
                let id = format!("old-{i:06}");
                let job = JobRecord {
                    state: JobState::Completed,
                    phase: Phase::Done,
                    finished_at_ms: ferry_model::now_ms(),
                    ..JobRecord::pending(
                        id.clone(),
                        JobKind::Backup,
                        TEAM.into(),
                        "old".into(),
                        CLUSTER.into(),
                        "cp".into(),
                        spec.clone(),
                        "manual".into(),
                    )
                };
                let shard = ferry_controller::jobs::new_shard(
                    &id,
                    &planned[0],
                    ferry_model::task::ShardOp::Backup,
                );
                ops.push(Op::put_json(keys::job(&id), &job));
                ops.push(Op::put_json(keys::shard(&id, &shard.id), &shard));
            }
            store.txn(vec![], ops).await?;
        }
        anyhow::Ok(())
    })
}

/// `ferry_reconcile_pass_seconds` (sum, count) from a controller's /metrics.
fn pass_seconds(addr: &str) -> anyhow::Result<(f64, f64)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("ferry_reconcile_pass_seconds_sum "),
        value("ferry_reconcile_pass_seconds_count "),
    ))
}

/// One run: a fresh etcd and controller, `history` finished jobs in its catalog, `workers`
/// simulated workers taking the `shards` of many backups created at once.
fn measure(
    cfg: &Config,
    notes: &mut Vec<String>,
    shards: usize,
    workers: usize,
    history: usize,
) -> anyhow::Result<Measured> {
    let run_dir = tempfile::Builder::new()
        .prefix("control-plane-")
        .tempdir_in(&cfg.work_dir)?;
    let etcd = Etcd::start(run_dir.path())?;
    let metrics_addr = format!("127.0.0.1:{}", procs::free_port());
    let ferry = Ferry::start(
        &cfg.bins,
        &run_dir.path().join("ferry"),
        &[
            "--store",
            &format!("etcd:{}", etcd.url),
            "--metrics-listen",
            &metrics_addr,
        ],
        &[],
    )?;
    ferry.add_local_storage("cp", CLUSTER)?;
    if history > 0 {
        eprintln!("control plane: writing {history} finished jobs into the catalog");
        seed_history(&etcd.url, history)?;
    }
    // The load generator gets one thread: the controller and etcd share the other cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(if cfg.quick { 60 } else { 300 });
    let counters = Arc::new(Counters {
        want: shards,
        ..Default::default()
    });

    let admin = std::fs::read_to_string(ferry.dir.join("controller-data/admin.token"))?;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", admin.trim()).parse()?;
    let mut control = rt.block_on(async {
        let channel = Endpoint::from_shared(ferry.url.clone())?.connect().await?;
        anyhow::Ok(ControlServiceClient::with_interceptor(
            channel,
            move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", bearer.clone());
                Ok(req)
            },
        ))
    })?;
    let join = ferry.join_token(CLUSTER)?;
    let specs = app_specs(shards);
    rt.block_on(async {
        for (_, yaml) in &specs {
            control
                .apply_app(v1::ApplyAppRequest {
                    team: TEAM.into(),
                    spec_yaml: yaml.clone(),
                })
                .await?;
        }
        anyhow::Ok(())
    })
    .context("applying the apps")?;

    eprintln!("control plane: starting {workers} simulated workers");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(workers);
    for i in 0..workers {
        let (url, c, tx) = (ferry.url.clone(), counters.clone(), ready_tx.clone());
        let token = join.clone();
        rt.spawn(async move {
            if let Err(e) = sim_worker(i, url, token, c, tx).await {
                eprintln!("control plane: simulated worker {i} ended: {e:#}");
            }
        });
    }
    drop(ready_tx);
    rt.block_on(async {
        for n in 0..workers {
            tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
                .await
                .with_context(|| format!("only {n} of {workers} simulated workers came up"))?
                .with_context(|| format!("only {n} of {workers} simulated workers came up"))?;
        }
        anyhow::Ok(())
    })?;

    eprintln!(
        "control plane: {} backups of {shards} shards in total",
        specs.len()
    );
    let cpu = |p: &procs::Proc| p.cpu_secs().unwrap_or(0.0);
    let self_cpu = || procs::cpu_secs(std::process::id()).unwrap_or(0.0);
    let cpu_before = (cpu(&ferry.controller), cpu(&etcd.proc_), self_cpu());
    let etcd_before = etcd_counters(&etcd.url)?;
    let pass_before = pass_seconds(&metrics_addr)?;
    let started = Instant::now();
    let ids: Vec<String> = rt
        .block_on(async {
            let creates = specs.iter().map(|(app, _)| {
                let mut control = control.clone();
                async move {
                    control
                        .create_backup(v1::CreateBackupRequest {
                            team: TEAM.into(),
                            app: app.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.into_inner().id)
                }
            });
            futures::future::join_all(creates)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })
        .context("creating the backups")?;
    let created_s = started.elapsed().as_secs_f64();
    let deadline = started + timeout;
    while counters.distinct() < shards && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let assigned = counters.distinct();
    let assigned_at = counters
        .all_assigned_at
        .lock()
        .ok()
        .and_then(|a| *a)
        .unwrap_or_else(Instant::now);
    let assign_s = assigned_at.duration_since(started).as_secs_f64();
    let cpu_assigned = (cpu(&ferry.controller), cpu(&etcd.proc_), self_cpu());
    let etcd_assigned = etcd_counters(&etcd.url)?;
    let pass_after = pass_seconds(&metrics_addr)?;
    let passes = (pass_after.1 - pass_before.1).max(1.0);
    let pass_s = (pass_after.0 - pass_before.0) / passes;

    // Let the jobs end (commit or fail), to report what became of them.
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    let example;
    let finish_deadline = Instant::now() + Duration::from_secs(if cfg.quick { 30 } else { 120 });
    loop {
        let jobs = rt.block_on(async {
            let mut out = Vec::new();
            for id in &ids {
                let job = control
                    .get_backup(v1::GetJobRequest {
                        team: TEAM.into(),
                        id: id.clone(),
                    })
                    .await?
                    .into_inner();
                out.push(job);
            }
            anyhow::Ok(out)
        })?;
        if jobs.iter().all(|j| is_final(j.state)) || Instant::now() > finish_deadline {
            for j in &jobs {
                let name = v1::JobState::try_from(j.state)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("JOB_STATE_")
                            .to_lowercase()
                    })
                    .unwrap_or_else(|_| j.state.to_string());
                *states.entry(name).or_default() += 1;
            }
            example = jobs
                .iter()
                .find(|j| !j.message.is_empty())
                .map(|j| {
                    // Simulated workers write no archive: the commit's check fails their shards.
                    let m: String = j.message.chars().take(160).collect();
                    format!(
                        " (e.g. {}: {m:?}…; the simulated workers write no archive)",
                        j.id
                    )
                })
                .unwrap_or_default();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let finished_s = started.elapsed().as_secs_f64();
    let controller_peak = ferry.controller.peak_rss_mib()?;
    let etcd_peak = etcd.proc_.peak_rss_mib()?;
    let self_peak = procs::peak_rss_mib(std::process::id())?;
    drop(rt);

    let rate = assigned as f64 / assign_s.max(1e-9);
    let c = &counters;
    notes.push(format!(
        "control plane ({history} finished jobs in the catalog): etcd + one controller (--store etcd, heartbeat 2 s), {workers} simulated \
         workers (max_shards 2, each its own connection) in one ferry-bench thread, {} config-only \
         backups of up to {SHARDS_PER_APP} shards created at once over gRPC ({created_s:.2} s to \
         create them all); {assigned} of {shards} shards assigned in {assign_s:.2} s{}; \
         {} Assign events, {} results accepted, {} refused, {} report errors, {} heartbeat \
         failures, {} unreadable tasks; job states {:.1} s after the start: {}{example}; CPU seconds \
         while assigning: controller {:.1}, etcd {:.1}, load generator {:.1}; peak RSS: \
         controller {controller_peak:.1} MiB, etcd {etcd_peak:.1} MiB, ferry-bench \
         {self_peak:.1} MiB; etcd work while assigning (messages per gRPC method, MVCC \
         operations, WAL fsyncs): {}",
        ids.len(),
        if assigned < shards {
            format!(" (timed out after {timeout:?})")
        } else {
            String::new()
        },
        c.events.load(Ordering::Relaxed),
        c.reports_accepted.load(Ordering::Relaxed),
        c.reports_refused.load(Ordering::Relaxed),
        c.report_errors.load(Ordering::Relaxed),
        c.heartbeat_failures.load(Ordering::Relaxed),
        c.unreadable_tasks.load(Ordering::Relaxed),
        finished_s,
        states
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        cpu_assigned.0 - cpu_before.0,
        cpu_assigned.1 - cpu_before.1,
        cpu_assigned.2 - cpu_before.2,
        etcd_delta(&etcd_before, &etcd_assigned, assigned),
    ));
    Ok(Measured {
        rate,
        pass_s,
        controller_peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_add_up_to_the_shards() {
        let specs = app_specs(250);
        assert_eq!(specs.len(), 3);
        let total: usize = specs
            .iter()
            .map(|(_, y)| ferry_model::app::AppSpec::from_yaml(y).unwrap())
            .map(|s| ferry_model::task::plan_shards(&s).len())
            .sum();
        assert_eq!(total, 250);
    }
}
