//! Live progress of a job: bars per shard (rate, ETA) on a terminal, plain lines when stderr is
//! not a terminal, nothing with `-o json` (stdout then holds only the final JSON document).
//! Everything goes to stderr, so the result on stdout stays clean either way.

use std::collections::HashMap;
use std::io::IsTerminal;

use ferry_proto::v1;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

/// How progress is shown.
pub enum Progress {
    /// indicatif bars, one per shard.
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
    },
    /// One line per change, for logs and pipes.
    Lines {
        last: String,
        shards: HashMap<String, i32>,
    },
    /// Nothing (`-o json`).
    Quiet,
}

fn style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "{prefix:28!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta:>4} {msg}"
    } else {
        "{prefix:28!} {spinner} {bytes:>10} {bytes_per_sec:>12} {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// The right kind for this output.
    pub fn new(json: bool) -> Progress {
        if json {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: HashMap::new(),
            }
        } else {
            Progress::Lines {
                last: String::new(),
                shards: HashMap::new(),
            }
        }
    }

    /// Shows a new state of the job.
    pub fn update(&mut self, job: &v1::Job) {
        match self {
            Progress::Quiet => {}
            Progress::Lines { last, shards } => {
                let now = chrono::Utc::now().format("%H:%M:%S");
                for s in &job.shards {
                    if shards.insert(s.id.clone(), s.state) != Some(s.state)
                        && s.state != v1::ShardState::Pending as i32
                    {
                        let mut line = format!(
                            "{now} shard {} {} {}",
                            s.id,
                            s.phase,
                            output::shard_state(s.state)
                        );
                        if s.state == v1::ShardState::Succeeded as i32 {
                            line.push_str(&format!(
                                " ({}, {} stored)",
                                output::size(s.bytes_done),
                                output::size(s.stored_bytes)
                            ));
                        } else if !s.error.is_empty() {
                            line.push_str(&format!(": {}", s.error));
                        } else if !s.worker.is_empty() {
                            line.push_str(&format!(" on {} (attempt {})", s.worker, s.attempt));
                        }
                        eprintln!("{line}");
                    }
                }
                let line = output::progress_line(job);
                if *last != line {
                    eprintln!("{now} {line}");
                    *last = line;
                }
            }
            Progress::Bars { multi, bars } => {
                for s in &job.shards {
                    let bar = bars.entry(s.id.clone()).or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new(0));
                        bar.set_style(style(false));
                        bar.set_prefix(s.id.clone());
                        bar
                    });
                    if s.bytes_total > 0 && bar.length() != Some(s.bytes_total) {
                        bar.set_style(style(true));
                        bar.set_length(s.bytes_total);
                    }
                    bar.set_position(s.bytes_done);
                    let state = output::shard_state(s.state);
                    bar.set_message(if s.error.is_empty() {
                        format!("{} {state}", s.phase)
                    } else {
                        format!("{state}: {}", s.error)
                    });
                    if s.state >= v1::ShardState::Succeeded as i32 && !bar.is_finished() {
                        bar.finish();
                    }
                }
            }
        }
    }

    /// Stops drawing (the final result is printed next).
    pub fn finish(&mut self) {
        if let Progress::Bars { bars, .. } = self {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}
