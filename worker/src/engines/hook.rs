//! Hook shards: a component's `pre_backup` or `post_backup` command, run once around all of its
//! shards on a worker of its node, with a time limit (`--hook-timeout`) and only the tail of its
//! output kept (for the job's record and errors).

use std::time::Duration;

use ferry_model::task::{Resource, ShardOutcome};

use super::{Run, ShardError};
use crate::executor::tail;

/// Output of a hook kept: the last bytes only.
const HOOK_OUTPUT_KEPT: usize = 16 << 10;

/// Runs the hook of a hook shard.
pub async fn run(run: &Run) -> Result<ShardOutcome, ShardError> {
    let Resource::Hook { hook, argv } = &run.task.resource else {
        return Err(ShardError::permanent("not a hook shard"));
    };
    let output = run_hook(hook.as_str(), argv, run.policy.hook_timeout).await?;
    Ok(ShardOutcome {
        detail: output,
        ..Default::default()
    })
}

/// Reads a pipe to its end, keeping only the last [`HOOK_OUTPUT_KEPT`] bytes.
async fn read_tail(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * HOOK_OUTPUT_KEPT {
            kept.drain(..kept.len() - HOOK_OUTPUT_KEPT);
        }
    }
    kept
}

/// Runs a hook with a time limit; returns the tail of its output (stdout, then stderr).
pub async fn run_hook(
    name: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<String, ShardError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(String::new());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ShardError::transient(format!("{name} hook {program:?} could not start: {e}"))
        })?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (out, err, status) = tokio::join!(read_tail(stdout), read_tail(stderr), child.wait());
        (out, err, status)
    };
    let (out, err, status) = match Box::pin(tokio::time::timeout(timeout, finished)).await {
        Ok(done) => done,
        Err(_) => {
            return Err(ShardError::transient(format!(
                "{name} hook {program:?} ran longer than {} (--hook-timeout) and was killed",
                humantime::format_duration(timeout)
            )));
        }
    };
    let status =
        status.map_err(|e| ShardError::transient(format!("{name} hook {program:?}: {e}")))?;
    let mut text = tail(&out);
    let err_tail = tail(&err);
    if !err_tail.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&err_tail);
    }
    if status.success() {
        tracing::info!(hook = name, program = %program, "hook done");
        return Ok(text);
    }
    Err(ShardError::transient(format!(
        "{name} hook {program:?} failed ({status}): {}",
        if err_tail.is_empty() {
            tail(&out)
        } else {
            err_tail
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_hook_that_runs_too_long_is_killed() {
        let started = std::time::Instant::now();
        let e = run_hook("pre_backup", &argv("sleep 30"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.message.contains("--hook-timeout"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn hook_output_is_kept_only_as_a_tail() {
        // 4 MiB of output, then the reason: memory stays bounded, the reason is in the error.
        let script =
            "head -c 4194304 /dev/zero | tr '\\0' x; echo; echo 'the real reason' >&2; exit 3";
        let e = run_hook("post_backup", &argv(script), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(e.message.contains("the real reason"), "{}", e.message);
        assert!(e.message.len() < 2000, "{} bytes", e.message.len());
        let out = run_hook("post_backup", &argv("echo fine"), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out, "fine");
    }
}
