//! Retention decisions, pure: which finished backups go (their TTL expired; a schedule keeps
//! only its newest N completed ones, and with a keep window every backup a restore to a moment
//! inside the window needs) and which finished restore and verify jobs leave the
//! history (`--job-history`). The leader's collector (`schedules::collect`) applies them.

use crate::records::{JobKind, JobRecord, JobState};

/// What a schedule keeps: its trigger (`schedule/NAME`), its team, its `keep` (the newest N
/// completed backups) and its `keep_window_ms` (every backup a restore to a moment of the last
/// window needs: those completed inside it and the newest one before it). Both may be set; a
/// backup either keeps stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    pub team: String,
    pub trigger: String,
    pub name: String,
    pub keep: Option<u32>,
    pub keep_window_ms: Option<i64>,
}

impl Keep {
    fn describe(&self) -> String {
        match (self.keep, self.keep_window_ms) {
            (Some(n), Some(w)) => format!("keeps {n} and a window of {}s", w / 1000),
            (Some(n), None) => format!("keeps {n}"),
            (None, Some(w)) => format!("keeps a window of {}s", w / 1000),
            (None, None) => "keeps everything".into(),
        }
    }
}

/// The finished backups to delete, each with the reason.
pub fn doomed_backups<'a>(
    backups: &'a [JobRecord],
    schedules: &[Keep],
    now_ms: i64,
) -> Vec<(&'a JobRecord, String)> {
    let finished: Vec<&JobRecord> = backups
        .iter()
        .filter(|j| j.kind == JobKind::Backup && j.state.is_final())
        .collect();
    let mut doomed: Vec<(&JobRecord, String)> = finished
        .iter()
        .copied()
        .filter(|j| j.expires_at_ms.is_some_and(|t| t <= now_ms))
        .map(|j| (j, "its TTL expired".to_owned()))
        .collect();
    for s in schedules
        .iter()
        .filter(|s| s.keep.is_some() || s.keep_window_ms.is_some())
    {
        let mut mine: Vec<&JobRecord> = finished
            .iter()
            .copied()
            .filter(|j| j.team == s.team && j.trigger == s.trigger)
            .collect();
        mine.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
        // Keep the newest N that completed, and those a moment of the window needs; older ones
        // go, and so do failed runs older than the oldest one kept.
        let completed: Vec<&JobRecord> = mine
            .iter()
            .copied()
            .filter(|j| j.state == JobState::Completed)
            .collect();
        let mut kept: Vec<&JobRecord> = completed
            .iter()
            .copied()
            .take(s.keep.unwrap_or(0) as usize)
            .collect();
        if let Some(window) = s.keep_window_ms {
            let start = now_ms - window;
            // Newest first: those completed inside the window, then the one a moment at the
            // window's start restores from.
            let inside = completed.iter().take_while(|j| j.finished_at_ms >= start);
            let before = completed.iter().find(|j| j.finished_at_ms < start);
            kept.extend(inside.chain(before).copied());
        }
        kept.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
        let Some(oldest_kept) = kept.last().map(|j| j.created_at_ms) else {
            continue;
        };
        for j in mine {
            let keep_it = kept.iter().any(|k| k.id == j.id) || j.created_at_ms > oldest_kept;
            if !keep_it && !doomed.iter().any(|(d, _)| d.id == j.id) {
                doomed.push((j, format!("schedule {} {}", s.name, s.describe())));
            }
        }
    }
    doomed
}

/// Whether a finished restore or verify job is older than the history kept. Backups are never
/// collected here: they go by TTL, keep-N or `backup delete`.
pub fn leaves_history(job: &JobRecord, now_ms: i64, history_ms: i64) -> bool {
    job.kind != JobKind::Backup
        && job.state.is_final()
        && job.finished_at_ms > 0
        && job.finished_at_ms + history_ms <= now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, created: i64, state: JobState, trigger: &str) -> JobRecord {
        let spec = ferry_model::app::AppSpec::from_yaml("name: app\ncomponents:\n  - name: web\n")
            .unwrap();
        JobRecord {
            state,
            created_at_ms: created,
            finished_at_ms: created + 1,
            ..JobRecord::pending(
                id.into(),
                JobKind::Backup,
                "t".into(),
                "app".into(),
                "c".into(),
                "s".into(),
                spec,
                trigger.into(),
            )
        }
    }

    fn keep(n: u32) -> Keep {
        Keep {
            team: "t".into(),
            trigger: "schedule/nightly".into(),
            name: "nightly".into(),
            keep: Some(n),
            keep_window_ms: None,
        }
    }

    #[test]
    fn a_keep_window_keeps_what_a_moment_inside_it_restores_from() {
        let t = "schedule/nightly";
        // Completed at 11, 21, 31, 41 (created + 1).
        let all = [
            backup("b1", 10, JobState::Completed, t),
            backup("b2", 20, JobState::Completed, t),
            backup("b3", 30, JobState::Completed, t),
            backup("b4", 40, JobState::Completed, t),
        ];
        let window = |w: i64, n: Option<u32>| Keep {
            keep: n,
            keep_window_ms: Some(w),
            ..keep(0)
        };
        let doomed = |k: Keep| -> Vec<String> {
            let mut ids: Vec<String> = doomed_backups(&all, &[k], 45)
                .iter()
                .map(|(j, _)| j.id.clone())
                .collect();
            ids.sort();
            ids
        };
        // The window starts at 20: b3 and b4 completed inside it, b2 (completed at 21 — inside
        // too); b1 is what a moment at 20 restores from, so it stays.
        assert!(doomed(window(25, None)).is_empty());
        // The window starts at 35: b4 inside, b3 (completed 31) the one before; b1, b2 go.
        assert_eq!(doomed(window(10, None)), ["b1", "b2"]);
        // keep 3 and a short window: the union.
        assert_eq!(doomed(window(10, Some(3))), ["b1"]);
        assert!(
            doomed_backups(&all, &[window(10, None)], 45)[0]
                .1
                .contains("window")
        );
    }

    #[test]
    fn expired_ttls_go() {
        let mut a = backup("a", 1, JobState::Completed, "manual");
        a.expires_at_ms = Some(100);
        let mut b = backup("b", 2, JobState::Completed, "manual");
        b.expires_at_ms = Some(300);
        let running = JobRecord {
            expires_at_ms: Some(1),
            ..backup("r", 3, JobState::Running, "manual")
        };
        let all = [a, b, running];
        let ids: Vec<&str> = doomed_backups(&all, &[], 200)
            .iter()
            .map(|(j, _)| j.id.as_str())
            .collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn a_schedule_keeps_its_newest_completed_and_failed_runs_newer_than_those() {
        let t = "schedule/nightly";
        let all = [
            backup("b1", 1, JobState::Completed, t),
            backup("b2", 2, JobState::Failed, t),
            backup("b3", 3, JobState::Completed, t),
            backup("b4", 4, JobState::Completed, t),
            backup("b5", 5, JobState::Failed, t),
            backup("other", 0, JobState::Completed, "manual"),
        ];
        let mut ids: Vec<&str> = doomed_backups(&all, &[keep(2)], 10)
            .iter()
            .map(|(j, _)| j.id.as_str())
            .collect();
        ids.sort();
        assert_eq!(ids, ["b1", "b2"]);
        assert!(doomed_backups(&all, &[keep(5)], 10).is_empty());
    }

    #[test]
    fn restores_and_verifies_leave_the_history_after_it_ends() {
        let mut r = backup("r", 0, JobState::Completed, "manual");
        r.kind = JobKind::Restore;
        r.finished_at_ms = 1000;
        assert!(!leaves_history(&r, 1500, 1000));
        assert!(leaves_history(&r, 2000, 1000));
        let b = backup("b", 0, JobState::Completed, "manual");
        assert!(
            !leaves_history(&b, i64::MAX / 2, 1000),
            "backups are not history"
        );
        r.state = JobState::Running;
        assert!(!leaves_history(&r, i64::MAX / 2, 1000));
    }
}
