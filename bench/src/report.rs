//! The result table: rows with typed values and targets, rendered for the terminal (comfy-table)
//! and as markdown.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// What a value measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Seconds,
    MiB,
    PerSecond,
}

/// What a row must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Ferry ÷ baseline at most this.
    RatioAtMost(f64),
    /// Ferry's value at most this.
    AtMost(f64),
    /// Ferry's value at least this.
    AtLeast(f64),
    /// Ferry's value at most `.0`, and Ferry ÷ baseline (the same measure at a smaller size) at
    /// most `.1`: bounded and flat.
    AtMostAndFlat(f64, f64),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub ferry: Option<f64>,
    pub baseline: Option<f64>,
    pub unit: Unit,
    pub target: Option<Target>,
    /// A verdict on a timing (left out in quick runs); memory verdicts are always given.
    pub timing: bool,
    /// Set when the measure could not be taken.
    pub error: Option<String>,
}

impl Row {
    /// Ferry against a baseline, in seconds, with a ratio target.
    pub fn ratio(measure: &str, ferry: f64, baseline: f64, max: f64) -> Row {
        Row {
            measure: measure.into(),
            ferry: Some(ferry),
            baseline: Some(baseline),
            unit: Unit::Seconds,
            target: Some(Target::RatioAtMost(max)),
            timing: true,
            error: None,
        }
    }

    /// A measure failed: one row saying why.
    pub fn error(measure: &str, why: &str) -> Row {
        Row {
            measure: measure.into(),
            ferry: None,
            baseline: None,
            unit: Unit::Seconds,
            target: None,
            timing: false,
            error: Some(why.into()),
        }
    }

    fn ratio_value(&self) -> Option<f64> {
        match (self.ferry, self.baseline) {
            (Some(f), Some(b)) if b > 0.0 => Some(f / b),
            _ => None,
        }
    }

    fn passes(&self) -> Option<bool> {
        let f = self.ferry?;
        Some(match self.target? {
            Target::RatioAtMost(max) => self.ratio_value()? <= max,
            Target::AtMost(max) => f <= max,
            Target::AtLeast(min) => f >= min,
            Target::AtMostAndFlat(max, flat) => f <= max && self.ratio_value()? <= flat,
        })
    }
}

/// Which verdicts to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdicts {
    All,
    /// Quick runs: sizes too small for timings to mean anything.
    MemoryOnly,
    None,
}

fn value(v: Option<f64>, unit: Unit) -> String {
    match v {
        None => "—".into(),
        Some(v) => match unit {
            Unit::Seconds => format!("{v:.2} s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::PerSecond => format!("{v:.0}/s"),
        },
    }
}

fn target(t: Option<Target>, unit: Unit) -> String {
    let v = |x: f64| match unit {
        Unit::Seconds => format!("{x:.0} s"),
        Unit::MiB => format!("{x:.0} MiB"),
        Unit::PerSecond => format!("{x:.0}/s"),
    };
    match t {
        None => "—".into(),
        Some(Target::RatioAtMost(max)) => format!("≤ {max:.2}"),
        Some(Target::AtMost(max)) => format!("≤ {}", v(max)),
        Some(Target::AtLeast(min)) => format!("≥ {}", v(min)),
        Some(Target::AtMostAndFlat(max, flat)) => format!("≤ {}, ratio ≤ {flat:.2}", v(max)),
    }
}

fn cells(row: &Row, verdicts: Verdicts) -> [String; 6] {
    if let Some(e) = &row.error {
        return [
            row.measure.clone(),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            format!("ERROR: {e}"),
        ];
    }
    let verdict = match (verdicts, row.timing) {
        (Verdicts::None, _) => "n/a".to_owned(),
        (Verdicts::MemoryOnly, true) => "n/a (quick)".to_owned(),
        _ => match row.passes() {
            Some(true) => "pass".into(),
            Some(false) => "FAIL".into(),
            None => "n/a".into(),
        },
    };
    [
        row.measure.clone(),
        value(row.ferry, row.unit),
        value(row.baseline, row.unit),
        row.ratio_value()
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| "—".into()),
        target(row.target, row.unit),
        verdict,
    ]
}

const HEADER: [&str; 6] = [
    "measure",
    "Ferry median",
    "baseline median",
    "ratio",
    "target",
    "pass/fail",
];

/// The table for a terminal.
pub fn render(rows: &[Row], verdicts: Verdicts) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(HEADER);
    for r in rows {
        t.add_row(cells(r, verdicts));
    }
    t.to_string()
}

/// The table and notes as markdown.
pub fn markdown(rows: &[Row], notes: &[String], verdicts: Verdicts) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        " --- |".repeat(HEADER.len())
    );
    for r in rows {
        let c = cells(r, verdicts).map(|s| s.replace('|', "\\|"));
        out.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    out.push('\n');
    for n in notes {
        out.push_str(&format!("- {}\n", n.replace('|', "\\|")));
    }
    out
}

/// Total and available memory, from /proc/meminfo.
pub fn memory_summary() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / (1 << 20) as f64)
    };
    match (field("MemTotal:"), field("MemAvailable:")) {
        (Some(t), Some(a)) => format!("{t:.1} GiB RAM ({a:.1} GiB available)"),
        _ => "memory unknown".into(),
    }
}

/// The median of some samples (the mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Wall and CPU seconds of every timed run of one kind.
#[derive(Debug, Default)]
pub struct Samples {
    secs: Vec<f64>,
    cpu: Vec<f64>,
}

impl Samples {
    /// Runs `op` (which returns its wall time), adding the CPU seconds that `pids`, this process
    /// and its children used meanwhile.
    pub fn take(
        &mut self,
        pids: &[u32],
        op: impl FnOnce() -> anyhow::Result<f64>,
    ) -> anyhow::Result<f64> {
        let before = crate::procs::cpu_total(pids);
        let secs = op()?;
        self.cpu.push(crate::procs::cpu_total(pids) - before);
        self.secs.push(secs);
        Ok(secs)
    }

    pub fn median(&self) -> f64 {
        median(&self.secs)
    }

    /// The latest run's wall seconds (0 before any).
    pub fn last(&self) -> f64 {
        self.secs.last().copied().unwrap_or(0.0)
    }

    /// `W s wall, C s CPU` (medians).
    pub fn describe(&self) -> String {
        format!(
            "{:.2} s wall, {:.2} s CPU",
            median(&self.secs),
            median(&self.cpu)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[5.0]), 5.0);
    }

    #[test]
    fn verdicts() {
        let r = Row::ratio("x", 1.0, 1.0, 1.10);
        assert_eq!(r.passes(), Some(true));
        let r = Row::ratio("x", 2.0, 1.0, 1.10);
        assert_eq!(r.passes(), Some(false));
        assert_eq!(cells(&r, Verdicts::MemoryOnly)[5], "n/a (quick)");
        assert_eq!(cells(&r, Verdicts::All)[5], "FAIL");
        let flat = Row {
            measure: "rss".into(),
            ferry: Some(40.0),
            baseline: Some(38.0),
            unit: Unit::MiB,
            target: Some(Target::AtMostAndFlat(64.0, 1.10)),
            timing: false,
            error: None,
        };
        assert_eq!(cells(&flat, Verdicts::MemoryOnly)[5], "pass");
        let md = markdown(&[flat], &["a note".into()], Verdicts::All);
        assert!(
            md.contains("| rss | 40.0 MiB | 38.0 MiB | 1.05 | ≤ 64 MiB, ratio ≤ 1.10 | pass |")
        );
    }
}
