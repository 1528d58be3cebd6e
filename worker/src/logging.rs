//! Log set-up shared by the three binaries: human lines by default, JSON on request, level from
//! `RUST_LOG` (default chosen by the binary). Logs go to stderr so that command output stays clean.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `default` is the filter when `RUST_LOG` is unset.
pub fn init(json: bool, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
