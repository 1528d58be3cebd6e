//! One module per command group. Each command takes the connection and the global options.

pub mod access;
pub mod apps;
pub mod jobs;
pub mod schedules;
pub mod storage;
pub mod transfer;
pub mod workers;

use crate::args::Output;
use crate::client::Api;

/// What every command gets.
pub struct Ctx {
    pub client: Api,
    /// The team asked for; empty: the token's team.
    pub team: String,
    pub output: Output,
}

impl Ctx {
    /// True when printing JSON.
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}
