//! The backups page's filters (pure): app, state, trigger and storage from the query string. The
//! app goes to `ListBackups` (the API filters by it); the others narrow the page it returned.

use ferry_model::names::check_name;
use ferry_proto::v1;
use serde::Deserialize;

/// Job states a filter may name, as the CLI prints them.
pub const STATES: &[&str] = &[
    "Pending",
    "Running",
    "Completed",
    "PartiallyFailed",
    "Failed",
    "Cancelled",
];

/// The query string as sent (empty fields mean "any").
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BackupQuery {
    #[serde(default)]
    pub app: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub trigger: String,
    #[serde(default)]
    pub storage: String,
}

/// Validated filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupFilter {
    pub app: Option<String>,
    pub state: Option<String>,
    /// `manual`, or a prefix such as `schedule/` or `schedule/nightly`.
    pub trigger: Option<String>,
    pub storage: Option<String>,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl BackupFilter {
    /// Checks a query: names must be names, the state one of [`STATES`].
    pub fn parse(q: &BackupQuery) -> Result<BackupFilter, String> {
        let f = BackupFilter {
            app: opt(&q.app),
            state: opt(&q.state),
            trigger: opt(&q.trigger),
            storage: opt(&q.storage),
        };
        if let Some(app) = &f.app {
            check_name("app name", app).map_err(|e| e.to_string())?;
        }
        if let Some(storage) = &f.storage {
            check_name("storage location", storage).map_err(|e| e.to_string())?;
        }
        if let Some(state) = &f.state
            && !STATES.contains(&state.as_str())
        {
            return Err(format!(
                "unknown state {state:?}: expected one of {}",
                STATES.join(", ")
            ));
        }
        if let Some(t) = &f.trigger
            && (t.len() > 200 || t.chars().any(char::is_control))
        {
            return Err("the trigger filter is too long or has control characters".into());
        }
        Ok(f)
    }

    /// Whether a backup passes the filters (the app was already filtered by the API, and is
    /// checked again so the filter stands on its own).
    pub fn matches(&self, job: &v1::Job, state_name: &str) -> bool {
        self.app.as_ref().is_none_or(|a| &job.app == a)
            && self.state.as_ref().is_none_or(|s| s == state_name)
            && self
                .trigger
                .as_ref()
                .is_none_or(|t| job.trigger.starts_with(t.as_str()))
            && self.storage.as_ref().is_none_or(|s| &job.storage == s)
    }

    /// True when anything is filtered.
    pub fn any(&self) -> bool {
        self.app.is_some()
            || self.state.is_some()
            || self.trigger.is_some()
            || self.storage.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(app: &str, state: &str, trigger: &str, storage: &str) -> BackupQuery {
        BackupQuery {
            app: app.into(),
            state: state.into(),
            trigger: trigger.into(),
            storage: storage.into(),
        }
    }

    fn job(app: &str, trigger: &str, storage: &str) -> v1::Job {
        v1::Job {
            app: app.into(),
            trigger: trigger.into(),
            storage: storage.into(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_fields_filter_nothing() {
        let f = BackupFilter::parse(&q("", " ", "", "")).unwrap();
        assert_eq!(f, BackupFilter::default());
        assert!(!f.any());
        assert!(f.matches(&job("shop", "manual", "local"), "Failed"));
    }

    #[test]
    fn every_field_narrows() {
        let f = BackupFilter::parse(&q("shop", "Completed", "schedule/", "local")).unwrap();
        assert!(f.any());
        assert!(f.matches(&job("shop", "schedule/nightly", "local"), "Completed"));
        assert!(!f.matches(&job("shop", "schedule/nightly", "local"), "Failed"));
        assert!(!f.matches(&job("blog", "schedule/nightly", "local"), "Completed"));
        assert!(!f.matches(&job("shop", "manual", "local"), "Completed"));
        assert!(!f.matches(&job("shop", "schedule/nightly", "s3"), "Completed"));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let e = BackupFilter::parse(&q("", "Exploded", "", "")).unwrap_err();
        assert!(e.contains("Completed"), "{e}");
        assert!(BackupFilter::parse(&q("../etc", "", "", "")).is_err());
        assert!(BackupFilter::parse(&q("", "", "", "a b")).is_err());
        assert!(BackupFilter::parse(&q("", "", "x\u{7}", "")).is_err());
    }
}
