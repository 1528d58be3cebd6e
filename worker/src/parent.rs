//! Ending with the process that started this one: the controller's in-process worker
//! (`FERRY_WORKER_PARENT_PID`) exits when its controller is gone, however it went (a SIGKILL
//! leaves no chance to stop children, and `kill_on_drop` needs the parent alive). Polling
//! `getppid` instead of `PR_SET_PDEATHSIG`: the signal fires when the *thread* that forked exits,
//! which in a tokio runtime can be any idle blocking thread.

use std::time::Duration;

/// The variable that names the parent to follow.
pub const PARENT_PID_ENV: &str = "FERRY_WORKER_PARENT_PID";

/// How often the parent is checked.
const POLL: Duration = Duration::from_millis(500);

/// Whether the process should go on: its parent is still `expected` (a dead parent's children
/// are re-parented to init or a subreaper, so the parent id changes).
pub fn parent_alive(expected: u32, current: u32) -> bool {
    expected == current
}

/// Exits the process once the parent named by [`PARENT_PID_ENV`] is gone (nothing when unset).
pub fn exit_with_parent() {
    let Some(expected) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                let current = std::os::unix::process::parent_id();
                if !parent_alive(expected, current) {
                    tracing::warn!(
                        parent = expected,
                        "the controller that started this worker is gone; exiting"
                    );
                    std::process::exit(0);
                }
                std::thread::sleep(POLL);
            }
        })
        .expect("starting the parent watch thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_parent_means_gone() {
        assert!(parent_alive(42, 42));
        assert!(!parent_alive(42, 1));
    }
}
