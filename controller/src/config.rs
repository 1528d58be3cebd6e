//! Controller settings: flags, each also an env var `FERRY_…` and a key of `--config FILE.toml`.
//! Precedence: flag or env var, then the file, then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::context::Settings;
use crate::timing::{DEFAULT_HEARTBEAT, Timings};

/// Where the controller listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Where a one-machine install keeps its store and archives.
pub use ferry_proto::DEFAULT_DATA_DIR;
/// The cluster of the in-process worker.
pub const EMBEDDED_CLUSTER: &str = "local";

/// `ferry-controller` flags.
#[derive(Debug, Default, Clone, clap::Parser)]
#[command(
    name = "ferry-controller",
    version,
    about = "Ferry's control plane: API, scheduler, worker sessions"
)]
pub struct Args {
    /// A TOML file with any of the settings below (keys as the flags, with underscores).
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the gRPC API [default: 127.0.0.1:7420].
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `embedded:PATH` or `etcd:URL[,URL]` [default: embedded:DATA_DIR/store.redb].
    #[arg(long, env = "FERRY_STORE")]
    pub store: Option<String>,
    /// Directory of the embedded store and of the default `local` storage [default: ./ferry-data].
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Do not run a worker for cluster `local` inside the controller.
    #[arg(long, env = "FERRY_NO_EMBEDDED_WORKER")]
    pub no_embedded_worker: bool,
    /// Worker heartbeat interval; every other timing derives from it [default: 2s].
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Failed attempts after which a shard fails for good [default: 3].
    #[arg(long, env = "FERRY_MAX_SHARD_FAILURES")]
    pub max_shard_failures: Option<u32>,
    /// How long a shard may wait for a worker of its cluster [default: 10m].
    #[arg(long, env = "FERRY_UNSCHEDULABLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub unschedulable_timeout: Option<Duration>,
    /// How often every storage location is listed to bring the catalog in line with it
    /// (backups written by another installation; backups deleted from the bucket); 0 turns the
    /// periodic sync off [default: 60s].
    #[arg(long, env = "FERRY_SYNC_INTERVAL", value_parser = humantime::parse_duration)]
    pub sync_interval: Option<Duration>,
    /// Unreferenced repository packs younger than this are never collected [default: 6h].
    #[arg(long, env = "FERRY_GC_GRACE", value_parser = humantime::parse_duration)]
    pub gc_grace: Option<Duration>,
    /// How often the leader collects unreferenced repository packs; 0 leaves it to
    /// `ferry storage gc` [default: 24h].
    #[arg(long, env = "FERRY_GC_INTERVAL", value_parser = humantime::parse_duration)]
    pub gc_interval: Option<Duration>,
    /// Log format: `human` or `json` [default: human].
    #[arg(long, env = "FERRY_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// The URL other controllers, workers and CLIs reach this one at [default: http://LISTEN].
    #[arg(long, env = "FERRY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9100).
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export traces over OTLP/gRPC to this endpoint [default: $OTEL_EXPORTER_OTLP_ENDPOINT].
    #[arg(long, env = "FERRY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// PEM certificate (chain) of the API: clients and workers then dial https://.
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: every client and worker must present a certificate it signed.
    #[arg(long, env = "FERRY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA the in-process worker trusts for the API's certificate [default: the
    /// certificates of --tls-cert, enough for a self-signed one].
    #[arg(long, env = "FERRY_CA_CERT", requires = "tls_cert")]
    pub ca_cert: Option<PathBuf>,
    /// Allow listening on a non-loopback address without TLS (warned at every start).
    #[arg(long, env = "FERRY_INSECURE")]
    pub insecure: bool,
    /// PEM CA of etcd's https:// endpoints [default: the system's roots].
    #[arg(long, env = "FERRY_ETCD_CA_CERT")]
    pub etcd_ca_cert: Option<PathBuf>,
    /// PEM client certificate for an etcd that checks them.
    #[arg(long, env = "FERRY_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM key of --etcd-cert.
    #[arg(long, env = "FERRY_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (with etcd authentication enabled); its password by reference below.
    #[arg(long, env = "FERRY_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// Environment variable holding the etcd user's password.
    #[arg(long, env = "FERRY_ETCD_PASSWORD_ENV")]
    pub etcd_password_env: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long, env = "FERRY_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// How long audit entries are kept [default: 90d].
    #[arg(long, env = "FERRY_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    pub audit_retention: Option<Duration>,
    /// How long finished restore and verify jobs stay listed [default: 30d].
    #[arg(long, env = "FERRY_JOB_HISTORY", value_parser = humantime::parse_duration)]
    pub job_history: Option<Duration>,
    /// Longest a unary call may take before it is answered DEADLINE_EXCEEDED [default: 60s].
    #[arg(long, env = "FERRY_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
    /// Calls served at once over all connections; more wait [default: 512].
    #[arg(long, env = "FERRY_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Embedded worker: volume paths it may read and write (repeatable) [default: /].
    #[arg(
        long = "worker-allow-path",
        env = "FERRY_WORKER_ALLOW_PATH",
        value_delimiter = ','
    )]
    pub worker_allow_path: Vec<PathBuf>,
    /// Embedded worker: programs that exec shards and hooks may run (repeatable) [default: none].
    #[arg(
        long = "worker-allow-exec",
        env = "FERRY_WORKER_ALLOW_EXEC",
        value_delimiter = ','
    )]
    pub worker_allow_exec: Vec<String>,
    /// Embedded worker: the directory `password_file` references must lie in [default: none].
    #[arg(long = "worker-secrets-dir", env = "FERRY_WORKER_SECRETS_DIR")]
    pub worker_secrets_dir: Option<PathBuf>,
    /// Embedded worker: age identity files that open encrypted backups (repeatable)
    /// [default: none; backing up into an encrypted location needs none].
    #[arg(
        long = "worker-identity-file",
        env = "FERRY_WORKER_IDENTITY_FILE",
        value_delimiter = ','
    )]
    pub worker_identity_file: Vec<PathBuf>,
    /// Serve the web console on this address (`off`: no console), with the API's TLS, tokens
    /// and roles [default: 127.0.0.1:7421 with the embedded store (a one-machine install),
    /// else off].
    #[arg(long, env = "FERRY_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Link of a trace id on the console's backup pages, `{trace_id}` replaced, e.g.
    /// `http://jaeger:16686/trace/{trace_id}` [default: no link].
    #[arg(long, env = "FERRY_TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
}

/// The keys a config file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub store: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub no_embedded_worker: Option<bool>,
    #[serde(default, with = "humantime_serde_opt")]
    pub heartbeat_interval: Option<Duration>,
    pub max_shard_failures: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    pub unschedulable_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub sync_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub gc_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub gc_interval: Option<Duration>,
    pub log_format: Option<String>,
    pub advertise_url: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub otlp_endpoint: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub etcd_ca_cert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub etcd_user: Option<String>,
    pub etcd_password_env: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    pub audit_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub job_history: Option<Duration>,
    pub max_concurrent_requests: Option<usize>,
    pub worker_allow_path: Option<Vec<PathBuf>>,
    pub worker_allow_exec: Option<Vec<String>>,
    pub worker_secrets_dir: Option<PathBuf>,
    pub worker_identity_file: Option<Vec<PathBuf>>,
    pub http_listen: Option<String>,
    pub trace_url_template: Option<String>,
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        raw.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Where the web console is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    Off,
    /// Asked for: failing to listen there fails the start.
    At(SocketAddr),
    /// The one-machine install's default: when the address is taken the controller warns and
    /// runs without a console.
    Default(SocketAddr),
}

impl HttpListen {
    /// `off`, or an address; `None` (not given): the default for the store.
    pub fn resolve(given: Option<&str>, store: &StoreSpec) -> Result<HttpListen, String> {
        match given.map(str::trim) {
            Some("off" | "none" | "") => Ok(HttpListen::Off),
            Some(addr) => addr
                .parse()
                .map(HttpListen::At)
                .map_err(|_| format!("invalid --http-listen {addr:?}: expected HOST:PORT or off")),
            None => match store {
                StoreSpec::Embedded(_) => Ok(HttpListen::Default(
                    crate::console::DEFAULT_HTTP_LISTEN
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )),
                StoreSpec::Etcd(_) => Ok(HttpListen::Off),
            },
        }
    }

    /// The address, unless off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            HttpListen::Off => None,
            HttpListen::At(a) | HttpListen::Default(a) => Some(a),
        }
    }
}

/// Checks `--trace-url-template`: an http(s) URL with `{trace_id}` in it.
pub fn check_trace_template(t: &str) -> Result<(), String> {
    if !(t.starts_with("http://") || t.starts_with("https://")) || !t.contains("{trace_id}") {
        return Err(format!(
            "invalid --trace-url-template {t:?}: expected an http(s) URL with {{trace_id}} in it, e.g. http://jaeger:16686/trace/{{trace_id}}"
        ));
    }
    Ok(())
}

/// Which store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded(PathBuf),
    Etcd(Vec<String>),
}

/// The API's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
    /// The CA the in-process worker trusts (`None`: the certificates of `cert`).
    pub ca: Option<PathBuf>,
}

/// How to reach a secured etcd; the password is a reference, resolved at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl EtcdAccess {
    /// Reads the files and the password reference.
    pub fn resolve(&self) -> Result<crate::store::etcd::EtcdSecurity, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("reading the etcd {what} {}: {e}", p.display()))
        };
        let ca_cert = self
            .ca_cert
            .as_deref()
            .map(|p| read("CA certificate", p))
            .transpose()?;
        let identity = match &self.cert {
            Some((c, k)) => Some((read("client certificate", c)?, read("client key", k)?)),
            None => None,
        };
        let user = match &self.user {
            None => None,
            Some(user) => {
                let password = match (&self.password_env, &self.password_file) {
                    (Some(var), None) => std::env::var(var).map_err(|_| {
                        format!("--etcd-password-env names {var}, which is not set")
                    })?,
                    (None, Some(file)) => String::from_utf8(read("password file", file)?)
                        .map_err(|_| "the etcd password file is not UTF-8".to_owned())?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                    _ => {
                        return Err(
                            "--etcd-user needs exactly one of --etcd-password-env and --etcd-password-file"
                                .into(),
                        );
                    }
                };
                Some((user.clone(), password))
            }
        };
        Ok(crate::store::etcd::EtcdSecurity {
            ca_cert,
            identity,
            user,
        })
    }
}

/// What the in-process worker of a one-machine install may touch (DESIGN §6 "Workers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedWorkerPolicy {
    pub allow_paths: Vec<PathBuf>,
    pub allow_exec: Vec<String>,
    pub secrets_dir: Option<PathBuf>,
    /// `--identity-file`s: what opens encrypted backups.
    pub identity_files: Vec<PathBuf>,
}

impl Default for EmbeddedWorkerPolicy {
    /// Every path (a one-machine install backs up what its own user can read), no program, and
    /// only `FERRY_SECRET_*` variables for passwords.
    fn default() -> Self {
        EmbeddedWorkerPolicy {
            allow_paths: vec![PathBuf::from("/")],
            allow_exec: Vec::new(),
            secrets_dir: None,
            identity_files: Vec::new(),
        }
    }
}

impl std::str::FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("embedded", path)) if !path.is_empty() => Ok(StoreSpec::Embedded(path.into())),
            Some(("etcd", urls)) if !urls.is_empty() => Ok(StoreSpec::Etcd(
                urls.split(',').map(str::to_owned).collect(),
            )),
            _ => Err(format!(
                "invalid --store {s:?}: expected embedded:PATH or etcd:URL[,URL]"
            )),
        }
    }
}

/// The resolved settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub listen: SocketAddr,
    pub store: StoreSpec,
    pub data_dir: PathBuf,
    pub embedded_worker: bool,
    pub timings: Timings,
    pub settings: Settings,
    pub json_logs: bool,
    /// Where others reach this controller; `None`: derived from the listen address.
    pub advertise_url: Option<String>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to export traces, if anywhere.
    pub otlp_endpoint: Option<String>,
    /// TLS of the API; `None`: plain HTTP/2 (loopback, or `insecure`).
    pub tls: Option<ServerTls>,
    /// Plain HTTP/2 on a non-loopback address was asked for.
    pub insecure: bool,
    pub etcd: EtcdAccess,
    pub max_concurrent_requests: usize,
    pub embedded_worker_policy: EmbeddedWorkerPolicy,
    /// Where the web console is served.
    pub http_listen: HttpListen,
    /// `--trace-url-template`.
    pub trace_url_template: Option<String>,
}

/// Audit entries are kept this long unless configured.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// A unary call is cut off after this long unless configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Calls served at once unless configured.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

impl ControllerConfig {
    /// A one-machine install rooted at `data_dir`, listening on `listen`.
    pub fn one_machine(data_dir: &Path, listen: SocketAddr) -> ControllerConfig {
        ControllerConfig {
            listen,
            store: StoreSpec::Embedded(data_dir.join("store.redb")),
            data_dir: data_dir.to_path_buf(),
            embedded_worker: true,
            timings: Timings::new(DEFAULT_HEARTBEAT),
            settings: Settings::default(),
            json_logs: false,
            advertise_url: None,
            metrics_listen: None,
            otlp_endpoint: None,
            tls: None,
            insecure: false,
            etcd: EtcdAccess::default(),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            embedded_worker_policy: EmbeddedWorkerPolicy::default(),
            // In-process controllers (tests, benchmarks) run many at once: no console unless
            // asked for.
            http_listen: HttpListen::Off,
            trace_url_template: None,
        }
    }

    /// How to serve the web console, if at all.
    pub fn console(&self) -> Option<crate::console::ConsoleConfig> {
        Some(crate::console::ConsoleConfig {
            listen: self.http_listen.addr()?,
            tls: self.tls.clone(),
            trace_url_template: self.trace_url_template.clone(),
            best_effort: matches!(self.http_listen, HttpListen::Default(_)),
        })
    }

    /// Refuses plain HTTP/2 on an address other machines can reach, unless `insecure` says so.
    pub fn check_transport(&self) -> Result<(), String> {
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(format!(
                "refusing to listen on {} without TLS: give --tls-cert and --tls-key, listen on a loopback address, or pass --insecure",
                self.listen
            ));
        }
        if let Some(addr) = self.http_listen.addr()
            && self.tls.is_none()
            && !addr.ip().is_loopback()
            && !self.insecure
        {
            return Err(format!(
                "refusing to serve the web console on {addr} without TLS: give --tls-cert and --tls-key, a loopback --http-listen, or pass --insecure"
            ));
        }
        Ok(())
    }

    /// Merges flags, env vars, the config file and defaults.
    pub fn resolve(args: Args) -> Result<ControllerConfig, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let listen = match args.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().map_err(|e| format!("{e}"))?,
        };
        let store = match args.store.or(file.store) {
            Some(s) => s.parse()?,
            None => StoreSpec::Embedded(data_dir.join("store.redb")),
        };
        let log_format = args
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "human".into());
        let json_logs = match log_format.as_str() {
            "human" => false,
            "json" => true,
            other => {
                return Err(format!(
                    "invalid log format {other:?}: expected human or json"
                ));
            }
        };
        let defaults = Settings::default();
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), client_ca) => Some(ServerTls {
                cert,
                key,
                client_ca,
                ca: args.ca_cert.or(file.ca_cert),
            }),
            (None, None, None) => None,
            _ => {
                return Err(
                    "--tls-cert and --tls-key go together (and --tls-client-ca needs both)".into(),
                );
            }
        };
        let etcd = EtcdAccess {
            ca_cert: args.etcd_ca_cert.or(file.etcd_ca_cert),
            cert: match (
                args.etcd_cert.or(file.etcd_cert),
                args.etcd_key.or(file.etcd_key),
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => return Err("--etcd-cert and --etcd-key go together".into()),
            },
            user: args.etcd_user.or(file.etcd_user),
            password_env: args.etcd_password_env.or(file.etcd_password_env),
            password_file: args.etcd_password_file.or(file.etcd_password_file),
        };
        let http_listen =
            HttpListen::resolve(args.http_listen.or(file.http_listen).as_deref(), &store)?;
        let trace_url_template = args.trace_url_template.or(file.trace_url_template);
        if let Some(t) = &trace_url_template {
            check_trace_template(t)?;
        }
        let policy_default = EmbeddedWorkerPolicy::default();
        let embedded_worker_policy = EmbeddedWorkerPolicy {
            allow_paths: non_empty(args.worker_allow_path)
                .or(file.worker_allow_path)
                .unwrap_or(policy_default.allow_paths),
            allow_exec: non_empty(args.worker_allow_exec)
                .or(file.worker_allow_exec)
                .unwrap_or(policy_default.allow_exec),
            secrets_dir: args.worker_secrets_dir.or(file.worker_secrets_dir),
            identity_files: non_empty(args.worker_identity_file)
                .or(file.worker_identity_file)
                .unwrap_or_default(),
        };
        Ok(ControllerConfig {
            listen,
            store,
            data_dir,
            embedded_worker: !(args.no_embedded_worker || file.no_embedded_worker.unwrap_or(false)),
            timings: Timings::new(
                args.heartbeat_interval
                    .or(file.heartbeat_interval)
                    .unwrap_or(DEFAULT_HEARTBEAT),
            ),
            settings: Settings {
                max_shard_failures: args
                    .max_shard_failures
                    .or(file.max_shard_failures)
                    .unwrap_or(defaults.max_shard_failures)
                    .max(1),
                unschedulable_timeout: args
                    .unschedulable_timeout
                    .or(file.unschedulable_timeout)
                    .unwrap_or(defaults.unschedulable_timeout),
                sync_interval: args
                    .sync_interval
                    .or(file.sync_interval)
                    .unwrap_or(defaults.sync_interval),
                gc_grace: args.gc_grace.or(file.gc_grace).unwrap_or(defaults.gc_grace),
                gc_interval: args
                    .gc_interval
                    .or(file.gc_interval)
                    .unwrap_or(defaults.gc_interval),
                audit_retention: args
                    .audit_retention
                    .or(file.audit_retention)
                    .unwrap_or(defaults.audit_retention),
                request_timeout: args
                    .request_timeout
                    .or(file.request_timeout)
                    .unwrap_or(defaults.request_timeout),
                job_history: args
                    .job_history
                    .or(file.job_history)
                    .unwrap_or(defaults.job_history),
            },
            json_logs,
            advertise_url: args.advertise_url.or(file.advertise_url),
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint),
            tls,
            insecure: args.insecure || file.insecure.unwrap_or(false),
            etcd,
            max_concurrent_requests: args
                .max_concurrent_requests
                .or(file.max_concurrent_requests)
                .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS)
                .max(1),
            embedded_worker_policy,
            http_listen,
            trace_url_template,
        })
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn no_flags_is_a_one_machine_install() {
        let c = ControllerConfig::resolve(Args::parse_from(["ferry-controller"])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store, StoreSpec::Embedded("ferry-data/store.redb".into()));
        assert!(c.embedded_worker);
    }

    #[test]
    fn the_example_config_parses_and_flags_win() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/controller.example.toml"
        );
        let args = Args::parse_from([
            "ferry-controller",
            "--config",
            example,
            "--listen",
            "127.0.0.1:9999",
        ]);
        let c = ControllerConfig::resolve(args).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.timings.heartbeat, Duration::from_secs(2));
        assert_eq!(c.settings.max_shard_failures, 3);
    }

    #[test]
    fn plain_http_beyond_loopback_needs_insecure() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ferry-controller"];
            argv.extend_from_slice(extra);
            ControllerConfig::resolve(Args::parse_from(argv)).unwrap()
        };
        assert!(parse(&[]).check_transport().is_ok());
        let open = parse(&["--listen", "0.0.0.0:7420"]);
        let e = open.check_transport().unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
        assert!(
            parse(&["--listen", "0.0.0.0:7420", "--insecure"])
                .check_transport()
                .is_ok()
        );
        let tls = parse(&[
            "--listen",
            "0.0.0.0:7420",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ]);
        assert!(tls.check_transport().is_ok());
    }

    #[test]
    fn etcd_passwords_are_read_by_reference() {
        let access = EtcdAccess {
            user: Some("ferry".into()),
            password_env: Some("FERRY_TEST_ETCD_PASSWORD_UNSET".into()),
            ..Default::default()
        };
        let e = access.resolve().map(|_| ()).unwrap_err();
        assert!(e.contains("FERRY_TEST_ETCD_PASSWORD_UNSET"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let access = EtcdAccess {
            user: Some("ferry".into()),
            password_file: Some(file),
            ..Default::default()
        };
        let resolved = access.resolve().unwrap();
        assert_eq!(resolved.user, Some(("ferry".into(), "s3cret".into())));
        assert!(!format!("{resolved:?}").contains("s3cret"));
    }

    #[test]
    fn the_console_is_on_by_default_only_for_a_one_machine_install() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ferry-controller"];
            argv.extend_from_slice(extra);
            ControllerConfig::resolve(Args::parse_from(argv))
        };
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.http_listen,
            HttpListen::Default("127.0.0.1:7421".parse().unwrap())
        );
        assert!(c.console().unwrap().best_effort);
        let etcd = parse(&["--store", "etcd:http://127.0.0.1:2379"]).unwrap();
        assert_eq!(etcd.http_listen, HttpListen::Off);
        assert!(etcd.console().is_none());
        let at = parse(&["--http-listen", "127.0.0.1:9000"]).unwrap();
        assert_eq!(
            at.http_listen,
            HttpListen::At("127.0.0.1:9000".parse().unwrap())
        );
        assert!(!at.console().unwrap().best_effort);
        assert_eq!(
            parse(&["--http-listen", "off"]).unwrap().http_listen,
            HttpListen::Off
        );
        assert!(parse(&["--http-listen", "nowhere"]).is_err());
        // Plain HTTP beyond loopback needs TLS or --insecure, as for the API.
        let open = parse(&["--http-listen", "0.0.0.0:7421"]).unwrap();
        assert!(open.check_transport().unwrap_err().contains("web console"));
    }

    #[test]
    fn trace_templates_must_be_urls_with_the_id() {
        assert!(check_trace_template("http://jaeger:16686/trace/{trace_id}").is_ok());
        assert!(check_trace_template("http://jaeger:16686/trace/").is_err());
        assert!(check_trace_template("javascript:alert({trace_id})").is_err());
    }

    #[test]
    fn bad_store_and_unknown_keys_are_refused() {
        assert!("mysql:x".parse::<StoreSpec>().is_err());
        assert!(toml::from_str::<FileConfig>("lissten = \"x\"").is_err());
    }
}
