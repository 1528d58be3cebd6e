//! What every Ferry process shares for being observed: logs and OpenTelemetry traces (`logging`:
//! set-up, W3C `traceparent` helpers, spans emitted with known ids), the Prometheus endpoint and
//! histogram buckets (`metrics`), and the host's name as a Ferry name. A small crate, so that the
//! controller and the CLI need not link the worker.

pub mod logging;
pub mod metrics;

/// The host name, or `node` when it cannot be read; made a valid Ferry name.
pub fn default_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "node".to_owned()
    } else {
        name
    }
}
