//! HTML: the layout every page shares and the pieces pages are made of, written with maud (every
//! interpolated value is escaped; nothing here uses `PreEscaped`). Formatting follows the CLI's
//! (`2026-11-21 10:35:00Z`, `1.2 GiB`, state names as `ferry backup list` prints them).

use ferry_proto::v1;
use maud::{DOCTYPE, Markup, html};

use super::calls::{Visitor, can};

/// The pages of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Backups,
    Jobs,
    Schedules,
    Workers,
    Storage,
    None,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Overview, "/", "Overview"),
    (Nav::Backups, "/backups", "Backups"),
    (Nav::Jobs, "/jobs", "Live jobs"),
    (Nav::Schedules, "/schedules", "Schedules"),
    (Nav::Workers, "/workers", "Workers"),
    (Nav::Storage, "/storage", "Storage"),
];

/// The asset URLs (versioned, so a new binary's assets are never taken from a cache).
pub fn css_url() -> String {
    format!("/assets/console.css?v={}", env!("CARGO_PKG_VERSION"))
}

/// See [`css_url`].
pub fn js_url() -> String {
    format!("/assets/console.js?v={}", env!("CARGO_PKG_VERSION"))
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · Ferry" }
            link rel="stylesheet" href=(css_url());
            script src=(js_url()) defer {}
        }
    }
}

/// A page for a signed-in visitor: navigation, who they are, sign-out.
pub fn page(v: &Visitor, nav: Nav, title: &str, body: Markup) -> Markup {
    let who = &v.caller;
    let team = match &who.team {
        Some(t) => format!("team {t}"),
        None => "every team".into(),
    };
    let viewing = if v.team.is_empty() {
        ferry_proto::model::DEFAULT_TEAM.to_owned()
    } else {
        v.team.clone()
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Ferry" }
                    nav aria-label="Main" {
                        ul {
                            @for (n, href, label) in NAV {
                                li {
                                    @if *n == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span #who { "token " strong { (who.token) } " · " (team) " · " (who.role.to_string()) }
                        @if who.team.is_none() && v.csrf.is_some() {
                            form.team method="post" action="/team" {
                                (csrf(v))
                                label for="team-pick" { "Team" }
                                input #team-pick type="text" name="team" value=(viewing) size="10" autocomplete="off";
                                button.link type="submit" { "Show" }
                            }
                        }
                        @if v.csrf.is_some() {
                            form method="post" action="/signout" {
                                (csrf(v))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without a session: the sign-in form, an error.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/" { "Ferry" } }
                main #main.narrow {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The sign-in form. `csrf` is the double-submit value also set as a cookie.
pub fn signin(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            p { "Sign in with a Ferry token (" code { "ferry token create NAME --team T --role viewer|operator|admin" } "; a first start writes the installation's admin token to " code { "DATA_DIR/admin.token" } ")." }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.stack method="post" action="/signin" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required
                    spellcheck="false" placeholder="fry_…";
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The hidden CSRF field of a form (nothing for bearer-token visitors).
pub fn csrf(v: &Visitor) -> Markup {
    html! {
        @if let Some(t) = &v.csrf {
            input type="hidden" name="csrf" value=(t);
        }
    }
}

/// An error page.
pub fn error(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

/// A notice on a page of a signed-in visitor.
pub fn notice(message: &str) -> Markup {
    html! { p.error role="alert" { (message) } }
}

pub use ferry_proto::names::{is_final, job_state, shard_state};

/// `backup`, `restore`, `verify`.
pub fn kind(k: i32) -> &'static str {
    match v1::JobKind::try_from(k).unwrap_or(v1::JobKind::Unspecified) {
        v1::JobKind::Backup => "backup",
        v1::JobKind::Restore => "restore",
        v1::JobKind::Verify => "verify",
        v1::JobKind::Stream => "stream",
        v1::JobKind::Unspecified => "job",
    }
}

/// A state as a badge (text, not only colour).
pub fn badge(state: &str) -> Markup {
    let class = format!("badge s-{}", state.to_lowercase());
    html! { span class=(class) { (state) } }
}

/// `1.2 GiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// `2026-11-21 10:35:00Z`, or `-`.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn human(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    let secs = match secs {
        0..3600 => secs,
        3600..86_400 => secs / 60 * 60,
        _ => secs / 3600 * 3600,
    };
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// `3m 4s ago`, or `never`.
pub fn age(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    if now_ms - ms < 1000 {
        return "just now".into();
    }
    format!("{} ago", human(now_ms - ms))
}

/// `in 3m`.
pub fn until(ms: i64, now_ms: i64) -> String {
    if ms <= now_ms {
        return "now".into();
    }
    format!("in {}", human(ms - now_ms))
}

/// `12s`, `340ms`, or `-`.
pub fn duration(start_ms: i64, end_ms: i64, now_ms: i64) -> String {
    if start_ms <= 0 {
        return "-".into();
    }
    let end = if end_ms > 0 { end_ms } else { now_ms };
    match end - start_ms {
        ms @ 0..1000 => format!("{ms}ms"),
        ms => human(ms),
    }
}

/// A `<time>` element with the UTC time as text and the age as its title.
pub fn when(ms: i64, now_ms: i64) -> Markup {
    html! {
        @if ms > 0 {
            time datetime=(time(ms)) title=(age(ms, now_ms)) { (time(ms)) }
        } @else { "-" }
    }
}

fn percent(done: u64, total: u64) -> u64 {
    (done.min(total) * 100).checked_div(total).unwrap_or(0)
}

/// Where a shard is, for its bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Waiting,
    Working,
    Done,
}

fn stage_of(state: &str) -> Stage {
    match state {
        "Succeeded" | "Completed" => Stage::Done,
        "Running" | "Assigned" => Stage::Working,
        _ => Stage::Waiting,
    }
}

fn bar(id: &str, value: Option<u64>, text: String) -> Markup {
    html! {
        div.progress {
            @if let Some(v) = value {
                progress id=(id) value=(v) max="100" aria-label=(text) {}
            } @else {
                progress id=(id) aria-label=(text) {}
            }
            span.progress-text { (text) }
        }
    }
}

/// A labelled progress bar of one shard: empty while it waits, indeterminate while it works
/// without a known total, full when done.
pub fn progress(id: &str, done: u64, total: u64, stage: Stage) -> Markup {
    let (value, text) = match stage {
        Stage::Done if done == 0 => (Some(100), "done".to_owned()),
        Stage::Done => (Some(100), format!("{} done", size(done))),
        Stage::Working if total > 0 => (
            Some(percent(done, total)),
            format!(
                "{} of {} ({}%)",
                size(done),
                size(total),
                percent(done, total)
            ),
        ),
        Stage::Working => (None, format!("{} so far", size(done))),
        Stage::Waiting => (Some(0), "waiting".to_owned()),
    };
    bar(id, value, text)
}

/// How far a whole job is, as a share of its shards: each finished shard counts one, a working
/// one its fraction of a known total.
pub fn job_share(job: &v1::Job) -> u64 {
    if job.shards.is_empty() {
        return if job_state(job.state) == "Completed" {
            100
        } else {
            0
        };
    }
    let per_mille: u64 = job
        .shards
        .iter()
        .map(|s| match stage_of(shard_state(s.state)) {
            Stage::Done => 1000,
            Stage::Working if s.bytes_total > 0 => {
                s.bytes_done.min(s.bytes_total) * 1000 / s.bytes_total
            }
            _ => 0,
        })
        .sum();
    per_mille / job.shards.len() as u64 / 10
}

/// The live part of a job: state, phase, message, overall and per-shard progress. The job page
/// renders it, and the server-sent events of `/jobs/ID/events` send it again on every change.
pub fn job_live(job: &v1::Job, now_ms: i64) -> Markup {
    let state = job_state(job.state);
    let done = is_final(job.state);
    let succeeded = state == "Completed";
    html! {
        div.live-summary {
            p {
                "State: " span #job-state data-state=(state) { (badge(state)) }
                @if !job.phase.is_empty() && !done { " · phase " (job.phase) }
                " · " (job.shards.len()) " shards · running for " (duration(job.started_at_ms, job.finished_at_ms, now_ms))
            }
            @if !job.message.is_empty() { p.message { (job.message) } }
            @let finished = job.shards.iter().filter(|s| shard_state(s.state) == "Succeeded").count();
            (bar("job-progress", Some(if succeeded { 100 } else { job_share(job) }),
                format!("{finished} of {} shards done · {} read", job.shards.len(), size(job.bytes))))
        }
        table.shards {
            caption.visually-hidden { "Shards and their progress" }
            thead { tr { th scope="col" { "Shard" } th scope="col" { "State" } th scope="col" { "Worker" } th scope="col" { "Progress" } } }
            tbody {
                @for s in &job.shards {
                    @let sstate = shard_state(s.state);
                    tr {
                        th scope="row" { code { (s.id) } @if !s.phase.is_empty() { " " small { (s.phase) } } }
                        td { (badge(sstate)) @if s.attempt > 1 { " " small { "attempt " (s.attempt) } } }
                        td { (s.worker) }
                        td {
                            (progress(&format!("shard-{}", s.id), s.bytes_done, s.bytes_total, stage_of(sstate)))
                            @if !s.error.is_empty() { p.error { (s.error) } }
                        }
                    }
                }
            }
        }
    }
}

/// The links a job page offers: its backup or safety backup, its detail page.
pub fn job_links(job: &v1::Job) -> Markup {
    html! {
        ul.links {
            @if kind(job.kind) == "backup" {
                li { a href={ "/backups/" (job.id) } { "Details of backup " (job.id) } }
            }
            @if !job.backup_id.is_empty() {
                li { "Restores backup " a href={ "/backups/" (job.backup_id) } { (job.backup_id) } }
            }
            @if !job.target_app.is_empty() {
                li { "Into app " strong { (job.target_app) } }
            }
            @if !job.safety_backup.is_empty() {
                li #safety-backup { "Safety backup (the app as it was; restore it to roll back): "
                    a href={ "/backups/" (job.safety_backup) } { (job.safety_backup) } }
            }
        }
    }
}

/// A cancel button for a running backup or restore, when the caller may cancel it.
pub fn cancel_button(v: &Visitor, job: &v1::Job) -> Markup {
    let method = match kind(job.kind) {
        "backup" => "CancelBackup",
        "restore" => "CancelRestore",
        _ => return html! {},
    };
    html! {
        @if !is_final(job.state) && can(&v.caller, method) {
            form.inline #cancel-form data-hide-when-done method="post" action={ "/jobs/" (job.id) "/cancel" } {
                (csrf(v))
                input type="hidden" name="kind" value=(kind(job.kind));
                button.danger #cancel type="submit" { "Cancel " (kind(job.kind)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let job = v1::Job {
            id: "x".into(),
            message: "<script>alert(1)</script>".into(),
            state: v1::JobState::Failed as i32,
            ..Default::default()
        };
        let html = job_live(&job, 0).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn formats_follow_the_cli() {
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(time(0), "-");
        assert_eq!(time(1_000), "1970-01-01 00:00:01Z");
        assert_eq!(age(0, 5), "never");
        assert_eq!(age(1_000, 62_000), "1m 1s ago");
        assert_eq!(age(1_000, 1_000 + 2 * 3_600_000 + 65_000), "2h 1m ago");
        assert_eq!(until(10_000, 4_000), "in 6s");
        assert_eq!(duration(0, 5, 9), "-");
        assert_eq!(duration(1, 76, 9), "75ms");
        assert_eq!(duration(1_000, 0, 62_000), "1m 1s");
        assert_eq!(percent(5, 10), 50);
        assert_eq!(percent(5, 0), 0);
        let shard = |state: v1::ShardState, done, total| v1::Shard {
            state: state as i32,
            bytes_done: done,
            bytes_total: total,
            ..Default::default()
        };
        let job = v1::Job {
            state: v1::JobState::Running as i32,
            shards: vec![
                shard(v1::ShardState::Succeeded, 8, 8),
                shard(v1::ShardState::Running, 5, 10),
                shard(v1::ShardState::Pending, 0, 0),
                shard(v1::ShardState::Pending, 0, 0),
            ],
            ..Default::default()
        };
        assert_eq!(job_share(&job), 37, "(1 + 0.5) of 4 shards");
        assert_eq!(
            job_state(v1::JobState::PartiallyFailed as i32),
            "PartiallyFailed"
        );
        assert!(is_final(v1::JobState::Cancelled as i32));
        assert!(!is_final(v1::JobState::Running as i32));
    }
}
