//! The overview's health verdict of an app, from its backups and schedules (pure): the last
//! backup failed; no backup completed within a schedule's period; a schedule is paused; never
//! backed up. Problems sort first.

use ferry_model::schedule::When;

/// What is wrong with an app's backups, worst first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The newest finished backup (cancelled ones aside) failed or partially failed.
    LastFailed { id: String, state: String },
    /// An active schedule should have produced a completed backup by now.
    Overdue { schedule: String, period_ms: i64 },
    /// No backup ever completed.
    NeverBackedUp,
    /// A schedule is paused: no backups are being taken by it.
    Paused { schedule: String },
}

impl Problem {
    /// How bad it is: 3 failed, 2 overdue or never backed up, 1 paused.
    pub fn severity(&self) -> u8 {
        match self {
            Problem::LastFailed { .. } => 3,
            Problem::Overdue { .. } | Problem::NeverBackedUp => 2,
            Problem::Paused { .. } => 1,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Problem::LastFailed { id, state } => format!("last backup {id} {state}"),
            Problem::Overdue {
                schedule,
                period_ms,
            } => format!(
                "no backup within schedule {schedule}'s period ({})",
                humantime::format_duration(std::time::Duration::from_millis(
                    (*period_ms).max(0) as u64 / 1000 * 1000
                ))
            ),
            Problem::NeverBackedUp => "never backed up".into(),
            Problem::Paused { schedule } => format!("schedule {schedule} is paused"),
        }
    }
}

/// A backup as the verdict needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFact {
    pub id: String,
    /// `Completed`, `Failed`, `Running`, … (the CLI's names).
    pub state: String,
    pub finished_at_ms: i64,
}

/// A schedule as the verdict needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFact {
    pub name: String,
    pub paused: bool,
    /// Time between two runs; `None` when unknown.
    pub period_ms: Option<i64>,
}

/// The verdict of one app.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// The worst problem's severity (0: healthy).
    pub fn severity(&self) -> u8 {
        self.problems
            .iter()
            .map(Problem::severity)
            .max()
            .unwrap_or(0)
    }

    /// `failed`, `overdue`, `paused` or `ok`: the CSS class and the word shown.
    pub fn label(&self) -> &'static str {
        match self.problems.first() {
            None => "ok",
            Some(Problem::LastFailed { .. }) => "failed",
            Some(Problem::Overdue { .. }) => "overdue",
            Some(Problem::NeverBackedUp) => "never backed up",
            Some(Problem::Paused { .. }) => "paused",
        }
    }
}

/// Slack after a period before a schedule counts as overdue: the tick's backup needs time to
/// finish. A tenth of the period, at least a minute.
pub fn slack_ms(period_ms: i64) -> i64 {
    (period_ms / 10).max(60_000)
}

/// Judges an app from its backups (newest first) and schedules at `now_ms`.
pub fn verdict(backups: &[BackupFact], schedules: &[ScheduleFact], now_ms: i64) -> Verdict {
    let mut problems = Vec::new();
    let finished = backups
        .iter()
        .find(|b| matches!(b.state.as_str(), "Completed" | "Failed" | "PartiallyFailed"));
    if let Some(b) = finished
        && b.state != "Completed"
    {
        problems.push(Problem::LastFailed {
            id: b.id.clone(),
            state: b.state.clone(),
        });
    }
    let last_ok = backups
        .iter()
        .filter(|b| b.state == "Completed")
        .map(|b| b.finished_at_ms)
        .max();
    if last_ok.is_none() {
        problems.push(Problem::NeverBackedUp);
    }
    for s in schedules {
        if s.paused {
            problems.push(Problem::Paused {
                schedule: s.name.clone(),
            });
            continue;
        }
        if let (Some(period), Some(ok)) = (s.period_ms, last_ok)
            && now_ms - ok > period + slack_ms(period)
        {
            problems.push(Problem::Overdue {
                schedule: s.name.clone(),
                period_ms: period,
            });
        }
    }
    problems.sort_by(|a, b| b.severity().cmp(&a.severity()).then(a.cmp(b)));
    Verdict { problems }
}

/// The time between two runs of a schedule, from its next two runs after `now_ms`.
pub fn period_ms(cron: &str, tz: &str, now_ms: i64) -> Option<i64> {
    let runs = next_runs(cron, tz, now_ms, 2);
    match runs.as_slice() {
        [a, b] => Some(b - a),
        _ => None,
    }
}

/// The next `n` runs of a cron expression in a zone after `now_ms` (through the same
/// [`When`] the scheduler uses).
pub fn next_runs(cron: &str, tz: &str, now_ms: i64, n: usize) -> Vec<i64> {
    let tz = (!tz.is_empty()).then_some(tz);
    let Ok(when) = When::new(cron, tz) else {
        return Vec::new();
    };
    let Some(mut at) = chrono::DateTime::from_timestamp_millis(now_ms) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match when.next_after(at) {
            Ok(next) => {
                out.push(next.timestamp_millis());
                at = next;
            }
            Err(_) => break,
        }
    }
    out
}

/// Orders apps problems first (worst first), then by name.
pub fn sort_problems_first<T>(apps: &mut [(String, Verdict, T)]) {
    apps.sort_by(|a, b| b.1.severity().cmp(&a.1.severity()).then(a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn backup(id: &str, state: &str, at: i64) -> BackupFact {
        BackupFact {
            id: id.into(),
            state: state.into(),
            finished_at_ms: at,
        }
    }

    fn schedule(name: &str, paused: bool, period: i64) -> ScheduleFact {
        ScheduleFact {
            name: name.into(),
            paused,
            period_ms: Some(period),
        }
    }

    #[test]
    fn a_recent_completed_backup_is_healthy() {
        let v = verdict(
            &[backup("b2", "Completed", 10 * HOUR)],
            &[schedule("hourly", false, HOUR)],
            10 * HOUR + HOUR / 2,
        );
        assert_eq!(v, Verdict::default());
        assert_eq!(v.label(), "ok");
        assert_eq!(v.severity(), 0);
    }

    #[test]
    fn a_failed_last_backup_is_the_worst_even_after_older_successes() {
        let v = verdict(
            &[
                backup("b3", "Running", 0),
                backup("b2", "Failed", 9 * HOUR),
                backup("b1", "Completed", 8 * HOUR),
            ],
            &[],
            9 * HOUR,
        );
        assert_eq!(
            v.problems,
            vec![Problem::LastFailed {
                id: "b2".into(),
                state: "Failed".into()
            }]
        );
        assert_eq!(v.label(), "failed");
        // A cancelled backup does not hide or cause a failure.
        let v = verdict(
            &[
                backup("b2", "Cancelled", 9 * HOUR),
                backup("b1", "Completed", 8 * HOUR),
            ],
            &[],
            9 * HOUR,
        );
        assert_eq!(v.severity(), 0);
    }

    #[test]
    fn no_backup_within_the_period_is_overdue_after_some_slack() {
        let s = [schedule("hourly", false, HOUR)];
        let last = [backup("b1", "Completed", 0)];
        assert_eq!(
            verdict(&last, &s, HOUR + 59_000).severity(),
            0,
            "within the slack"
        );
        let v = verdict(&last, &s, 2 * HOUR);
        assert_eq!(v.label(), "overdue");
        assert!(
            v.problems[0].describe().contains("hourly"),
            "{:?}",
            v.problems
        );
        assert!(
            v.problems[0].describe().contains("1h"),
            "{}",
            v.problems[0].describe()
        );
    }

    #[test]
    fn paused_schedules_and_never_backed_up_apps_are_problems_worst_first() {
        let v = verdict(
            &[backup("b1", "Failed", 5)],
            &[schedule("nightly", true, 24 * HOUR)],
            10,
        );
        assert_eq!(
            v.problems,
            vec![
                Problem::LastFailed {
                    id: "b1".into(),
                    state: "Failed".into()
                },
                Problem::NeverBackedUp,
                Problem::Paused {
                    schedule: "nightly".into()
                },
            ]
        );
        assert_eq!(verdict(&[], &[], 0).label(), "never backed up");
        let v = verdict(
            &[backup("b1", "Completed", 0)],
            &[schedule("n", true, HOUR)],
            100 * HOUR,
        );
        assert_eq!(v.label(), "paused", "a paused schedule is never overdue");
    }

    #[test]
    fn apps_with_problems_sort_first() {
        let ok = Verdict::default();
        let failed = verdict(&[backup("x", "Failed", 0)], &[], 0);
        let paused = verdict(
            &[backup("x", "Completed", 0)],
            &[schedule("s", true, HOUR)],
            0,
        );
        let mut apps = vec![
            ("a".to_owned(), ok, ()),
            ("b".to_owned(), paused, ()),
            ("c".to_owned(), failed, ()),
        ];
        sort_problems_first(&mut apps);
        let order: Vec<_> = apps.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }

    #[test]
    fn next_runs_and_periods_come_from_the_schedulers_cron() {
        let runs = next_runs("0 * * * *", "UTC", 0, 3);
        assert_eq!(runs, vec![HOUR, 2 * HOUR, 3 * HOUR]);
        assert_eq!(period_ms("0 0 * * *", "", 0), Some(24 * HOUR));
        assert_eq!(next_runs("not cron", "UTC", 0, 3), Vec::<i64>::new());
    }
}
