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
pub const DEFAULT_DATA_DIR: &str = "ferry-data";
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
    pub log_format: Option<String>,
    pub advertise_url: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub otlp_endpoint: Option<String>,
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

/// Which store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded(PathBuf),
    Etcd(Vec<String>),
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
}

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
        }
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
            },
            json_logs,
            advertise_url: args.advertise_url.or(file.advertise_url),
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint),
        })
    }
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
    fn bad_store_and_unknown_keys_are_refused() {
        assert!("mysql:x".parse::<StoreSpec>().is_err());
        assert!(toml::from_str::<FileConfig>("lissten = \"x\"").is_err());
    }
}
