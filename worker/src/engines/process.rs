//! Long-running children of a shard (a log streamer, a temporary PostgreSQL server) that must
//! never outlive the worker.
//!
//! Each is started from a thread of its own with `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills
//! the child when the thread that forked it exits, and so also when the whole worker dies, even
//! by SIGKILL. The signal follows the forking *thread*, not the process (see `parent.rs`), so
//! that thread stays alive, waiting for the child, for as long as the child runs. Dropping the
//! handle stops the child: its stop signal, then SIGKILL after [`GRACE`].

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ShardError;
use super::dump::program;

/// How long a child may take to exit after its stop signal before it is killed.
pub const GRACE: Duration = Duration::from_secs(10);
/// How often the watching thread looks at its child.
const POLL: Duration = Duration::from_millis(50);

/// What the watching thread and the handle share.
#[derive(Default)]
struct State {
    /// Set by [`Supervised::stop`]: send the stop signal.
    stop: bool,
    /// The child's exit status, once it exited.
    exited: Option<ExitStatus>,
}

/// A running child, stopped when dropped.
pub struct Supervised {
    name: String,
    state: Arc<Mutex<State>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    /// Starts `cmd` (stdin, stdout and stderr as the caller set them) from a thread of its own.
    /// `stop_signal` is how it is asked to end (SIGINT: PostgreSQL's fast shutdown).
    pub fn spawn(mut cmd: Command, stop_signal: i32) -> Result<Supervised, ShardError> {
        let name = program(&cmd);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let state = Arc::new(Mutex::new(State::default()));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = {
            let (state, name) = (state.clone(), name.clone());
            std::thread::Builder::new()
                .name(format!("child-{name}"))
                .spawn(move || {
                    let child = cmd.spawn();
                    let mut child = match child {
                        Ok(c) => {
                            let _ = started_tx.send(Ok(()));
                            c
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    watch(&mut child, &state, stop_signal);
                })
                .map_err(|e| ShardError::transient(format!("starting a thread for {name}: {e}")))?
        };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Supervised {
                name,
                state,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        ShardError::permanent(format!("{name} is not installed on this worker"))
                    }
                    _ => ShardError::transient(format!("{name} could not start: {e}")),
                })
            }
            Err(_) => Err(ShardError::transient(format!(
                "the thread starting {name} died"
            ))),
        }
    }

    /// The child's exit status, once it exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).exited
    }

    /// The program's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the child to stop and waits until it is gone (killed after [`GRACE`]). Blocks.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.stop_and_join();
        self.exited()
    }

    fn stop_and_join(&mut self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The watching thread's loop: reaps the child, sends the stop signal when asked, and kills a
/// child that outstays its grace.
fn watch(child: &mut std::process::Child, state: &Mutex<State>, stop_signal: i32) {
    let mut deadline: Option<Instant> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            state.lock().unwrap_or_else(|e| e.into_inner()).exited = Some(status);
            return;
        }
        let stop = state.lock().unwrap_or_else(|e| e.into_inner()).stop;
        match deadline {
            None if stop => {
                // The child is not reaped yet (try_wait above), so its pid is still its own.
                let pid = child.id() as i32;
                // SAFETY: kill(2) on our own unreaped child; no memory is involved.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, stop_signal);
                }
                deadline = Some(Instant::now() + GRACE);
            }
            Some(at) if Instant::now() >= at => {
                let _ = child.kill();
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    }
}
