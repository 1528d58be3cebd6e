//! Every timing of the controller, derived from one base interval (the worker heartbeat), so
//! that tests can speed the whole system up by changing one number and nothing drifts apart.

use std::time::Duration;

/// The default heartbeat interval of workers.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// All derived timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often a worker heartbeats.
    pub heartbeat: Duration,
}

impl Timings {
    /// Timings derived from a heartbeat interval.
    pub fn new(heartbeat: Duration) -> Self {
        Timings { heartbeat }
    }

    /// A worker session lives this long without a heartbeat: three missed beats plus slack
    /// (2 s → 10 s, the DESIGN.md default).
    pub fn lease_ttl(&self) -> Duration {
        self.heartbeat * 3 + self.heartbeat * 2
    }

    /// The leader's lease: a dead leader is replaced this long after its last keep-alive.
    pub fn election_ttl(&self) -> Duration {
        self.lease_ttl()
    }

    /// The reconciler looks at every active job at least this often, even without events.
    pub fn reconcile_interval(&self) -> Duration {
        self.heartbeat / 4
    }

    /// How often the leader checks whether a schedule is due (a seconds-resolution cron fires
    /// within this of its time).
    pub fn schedule_tick(&self) -> Duration {
        self.heartbeat / 4
    }

    /// The least time between two reconciler passes, however often it is woken: reports that
    /// arrive meanwhile are handled by one pass (and their freed slots filled by one batch).
    /// 1% of a heartbeat: 20 ms by default.
    pub fn pass_gap(&self) -> Duration {
        self.heartbeat / 100
    }

    /// How often the leader checks that every app with `pitr` databases has its log streams
    /// running (and that they match the app).
    pub fn stream_check(&self) -> Duration {
        self.heartbeat
    }

    /// How long after an app's stream job failed (every stream failed for good) a new one is
    /// started: 30 heartbeats (a minute by default).
    pub fn stream_restart(&self) -> Duration {
        self.heartbeat * 30
    }

    /// How often expired backups and those beyond a schedule's `keep` are deleted.
    pub fn gc_interval(&self) -> Duration {
        self.heartbeat * 5
    }

    /// Delay before retrying a failed shard the `failures`-th time: one heartbeat, doubling,
    /// at most 16 heartbeats.
    pub fn retry_backoff(&self, failures: u32) -> Duration {
        self.heartbeat * 2u32.saturating_pow(failures.saturating_sub(1)).min(16)
    }

    /// How often the job stream re-reads a job when nothing announced a change.
    pub fn watch_poll(&self) -> Duration {
        self.heartbeat / 2
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings::new(DEFAULT_HEARTBEAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let t = Timings::default();
        assert_eq!(t.lease_ttl(), Duration::from_secs(10));
        assert_eq!(t.retry_backoff(1), Duration::from_secs(2));
        assert_eq!(t.retry_backoff(3), Duration::from_secs(8));
        assert_eq!(t.retry_backoff(30), Duration::from_secs(32));
    }
}
