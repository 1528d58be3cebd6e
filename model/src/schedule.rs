//! When scheduled backups run: a cron expression (5 fields, or 6 with seconds first) in UTC or an
//! IANA time zone, or a preset (`hourly`, `daily`, `weekly`, `monthly`). Cron matching and DST
//! come from `croner` and `chrono-tz`, not from hand-written calendar code:
//!
//! - a time that does not exist (the spring-forward gap) fires at the first valid instant after
//!   it (02:30 → 03:00);
//! - a time that exists twice (fall back) fires once, at its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// A preset period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl FromStr for Every {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hourly" => Ok(Every::Hourly),
            "daily" => Ok(Every::Daily),
            "weekly" => Ok(Every::Weekly),
            "monthly" => Ok(Every::Monthly),
            other => Err(ModelError::Schedule(format!(
                "unknown period {other:?}: expected hourly, daily, weekly or monthly"
            ))),
        }
    }
}

impl Every {
    /// The cron expression of the preset (at minute 0, midnight, Sunday, the 1st).
    pub fn cron(self) -> &'static str {
        match self {
            Every::Hourly => "0 * * * *",
            Every::Daily => "0 0 * * *",
            Every::Weekly => "0 0 * * 0",
            Every::Monthly => "0 0 1 * *",
        }
    }
}

/// A validated "when": the expression and the zone it is read in.
#[derive(Debug, Clone)]
pub struct When {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
    /// The expression as given (or the preset's), for display.
    pub expression: String,
}

impl When {
    /// Parses a cron expression (or a preset's) in a zone (`None`: UTC).
    pub fn new(expression: &str, tz: Option<&str>) -> Result<When, ModelError> {
        let cron = croner::Cron::new(expression)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                ModelError::Schedule(format!("invalid cron expression {expression:?}: {e}"))
            })?;
        let tz = match tz {
            None | Some("") | Some("UTC") => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                ModelError::Schedule(format!(
                    "unknown time zone {name:?}: expected an IANA name such as Europe/Berlin"
                ))
            })?,
        };
        Ok(When {
            cron,
            tz,
            expression: expression.to_owned(),
        })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>, ModelError> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ModelError::Schedule(format!("{:?} never fires again: {e}", self.expression))
            })
    }

    /// The zone's name.
    pub fn zone(&self) -> &str {
        self.tz.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn runs(when: &When, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = when.next_after(t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn utc_by_default_and_presets() {
        let daily = When::new(Every::Daily.cron(), None).unwrap();
        assert_eq!(
            runs(&daily, "2026-11-21T10:00:00Z", 2),
            ["2026-11-22T00:00:00+00:00", "2026-11-23T00:00:00+00:00"]
        );
        let secs = When::new("*/2 * * * * *", None).unwrap();
        assert_eq!(
            runs(&secs, "2026-11-21T10:00:01Z", 2),
            ["2026-11-21T10:00:02+00:00", "2026-11-21T10:00:04+00:00"]
        );
        assert_eq!("weekly".parse::<Every>().unwrap(), Every::Weekly);
        assert!("fortnightly".parse::<Every>().is_err());
    }

    #[test]
    fn spring_forward_gap_fires_at_the_first_valid_instant() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        let when = When::new("30 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            runs(&when, "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00+00:00", // 03:00 EDT, the first instant after the gap
                "2026-03-09T06:30:00+00:00", // 02:30 EDT
                "2026-03-10T06:30:00+00:00",
            ]
        );
    }

    #[test]
    fn fall_back_repeated_hour_fires_once() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let when = When::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            runs(&when, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // Across the change, a 09:00 local schedule moves from 07:00 to 08:00 UTC.
        let nine = When::new("0 9 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            runs(&nine, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T08:00:00+00:00", "2026-10-26T08:00:00+00:00"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_clearly() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "every day",
            "0 25 * * *",
        ] {
            let err = When::new(bad, None).unwrap_err().to_string();
            assert!(err.contains("invalid cron expression"), "{bad:?}: {err}");
        }
        let err = When::new("0 * * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown time zone \"Mars/Olympus\""), "{err}");
        assert_eq!(
            When::new("0 * * * *", Some("Asia/Tokyo")).unwrap().zone(),
            "Asia/Tokyo"
        );
    }
}
