//! ferry-controller: serves the CLI and worker APIs, splits jobs into shards, hands them to live
//! workers, tracks and retries them, and commits backups by writing their manifest last.
//! See README.md for the module map.

pub mod access;
pub mod api;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod console;
pub mod context;
pub mod dispatch;
pub mod election;
pub mod embedded_worker;
pub mod error;
pub mod gc;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod placement;
pub mod reconciler;
pub mod records;
pub mod retention;
pub mod schedules;
pub mod sealing;
pub mod server;
pub mod shards;
pub mod store;
pub mod streams;
pub mod timing;
pub mod tokens;
pub mod trust;
pub mod workers;

pub use config::{Args, ControllerConfig};
pub use server::{RunningController, start};
