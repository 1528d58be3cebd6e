//! One handler per page and form. Each reads and writes only through [`Console::call`] (the gRPC
//! handlers, authorized and audited as gRPC calls); what a page adds is presentation and the
//! pure decisions of `health`, `filters` and `rewrites`. Buttons are shown only when the same
//! decision would allow their call, and a forged POST is refused by that decision anyway.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ferry_model::now_ms;
use ferry_proto::v1;
use ferry_proto::v1::control_service_server::ControlService;
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Status};

use super::calls::{self, Visitor, can};
use super::filters::{BackupFilter, BackupQuery, STATES};
use super::views::{self, Nav, age, badge, csrf, job_state, size, time, until, when};
use super::{Console, Failure, health, html, rewrites, session};
use crate::api::control::ControlApi;
use crate::auth::Action;

type Page = Result<Response, Failure>;

impl Console {
    /// One API call as `v` (see [`calls::call`]).
    pub async fn call<'a, M, R, Fut>(
        &'a self,
        v: &Visitor,
        method: &'static str,
        msg: M,
        handler: impl FnOnce(&'a ControlApi, Request<M>) -> Fut,
    ) -> Result<R, Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<R>, Status>> + 'a,
    {
        calls::call(&self.ctx, &self.api, v, method, msg, handler).await
    }

    async fn apps(&self, v: &Visitor) -> Result<Vec<v1::App>, Status> {
        let r = self
            .call(
                v,
                "ListApps",
                v1::ListAppsRequest {
                    team: v.team.clone(),
                },
                |a, r| a.list_apps(r),
            )
            .await?;
        Ok(r.apps)
    }

    async fn storage_names(&self, v: &Visitor) -> Result<Vec<String>, Status> {
        let r = self
            .call(v, "ListStorage", v1::ListStorageRequest {}, |a, r| {
                a.list_storage(r)
            })
            .await?;
        Ok(r.locations.into_iter().map(|l| l.name).collect())
    }

    async fn backups_of(
        &self,
        v: &Visitor,
        app: &str,
        page_size: u32,
    ) -> Result<Vec<v1::Job>, Status> {
        let req = v1::ListBackupsRequest {
            team: v.team.clone(),
            app: app.to_owned(),
            page_size,
            ..Default::default()
        };
        Ok(self
            .call(v, "ListBackups", req, |a, r| a.list_backups(r))
            .await?
            .jobs)
    }

    async fn schedule_list(&self, v: &Visitor) -> Result<Vec<v1::Schedule>, Status> {
        Ok(self
            .call(
                v,
                "ListSchedules",
                v1::ListSchedulesRequest {
                    team: v.team.clone(),
                },
                |a, r| a.list_schedules(r),
            )
            .await?
            .schedules)
    }

    async fn get_backup(&self, v: &Visitor, id: &str) -> Result<v1::Job, Status> {
        let req = v1::GetJobRequest {
            team: v.team.clone(),
            id: id.to_owned(),
        };
        self.call(v, "GetBackup", req, |a, r| a.get_backup(r)).await
    }

    /// A job of any kind, as its watch stream shows it first.
    pub async fn current_job(&self, v: &Visitor, id: &str) -> Result<v1::Job, Status> {
        use futures::StreamExt;
        let req = v1::GetJobRequest {
            team: v.team.clone(),
            id: id.to_owned(),
        };
        let mut stream = self.call(v, "WatchJob", req, |a, r| a.watch_job(r)).await?;
        match tokio::time::timeout(self.ctx.settings.request_timeout, stream.next()).await {
            Ok(Some(job)) => job,
            Ok(None) => Err(Status::not_found(format!("job {id:?} not found"))),
            Err(_) => Err(Status::deadline_exceeded("the job did not answer in time")),
        }
    }
}

fn ok(markup: Markup) -> Page {
    Ok(html(markup).into_response())
}

/// 303 to a page of this console.
fn see(path: &str) -> Page {
    Ok(Redirect::to(path).into_response())
}

/// Only paths of this console are followed after signing in (never another site).
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local && !next.starts_with("/signin") && !next.starts_with("/signout") {
        next
    } else {
        "/"
    }
}

/// Parses a form after checking its CSRF token (when the visitor has a session).
fn posted<T: DeserializeOwned>(v: &Visitor, body: &Bytes) -> Result<T, Failure> {
    #[derive(Deserialize)]
    struct Token {
        #[serde(default)]
        csrf: String,
    }
    if let Some(expected) = &v.csrf {
        let given = serde_urlencoded::from_bytes::<Token>(body)
            .map(|t| t.csrf)
            .unwrap_or_default();
        if !session::same_secret(expected, &given) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or wrong: reload the page and try again.",
            ));
        }
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|e| Failure::bad_request(format!("the form could not be read: {e}")))
}

// ----- signing in and out -----

/// The sign-in form with a fresh double-submit token.
pub fn signin_page(
    status: StatusCode,
    next: &str,
    message: Option<&str>,
    secure: bool,
) -> Response {
    let token = session::random_hex();
    let cookie = session::set_cookie(
        session::SIGNIN_COOKIE,
        &token,
        secure,
        std::time::Duration::from_secs(3600),
    );
    (
        status,
        [(header::SET_COOKIE, cookie)],
        html(views::signin(&token, safe_next(next), message)),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

pub async fn signin_form(
    State(c): State<Arc<Console>>,
    Query(q): Query<NextQuery>,
    parts: axum::http::request::Parts,
) -> Response {
    if c.authenticate(&parts).await.is_ok() {
        return Redirect::to(safe_next(&q.next)).into_response();
    }
    signin_page(StatusCode::OK, &q.next, None, c.tls)
}

#[derive(Deserialize)]
struct SigninForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

pub async fn signin(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<SigninForm>(&body) else {
        return signin_page(
            StatusCode::BAD_REQUEST,
            "/",
            Some("The form could not be read."),
            c.tls,
        );
    };
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie(h, session::SIGNIN_COOKIE))
        .unwrap_or_default();
    if !session::same_secret(cookie, &form.csrf) {
        return signin_page(
            StatusCode::FORBIDDEN,
            &form.next,
            Some("The sign-in form expired or came from elsewhere: try again."),
            c.tls,
        );
    }
    let peer = parts
        .extensions
        .get::<super::Peer>()
        .map(|p| p.0.to_string())
        .unwrap_or_default();
    let audit = |token: &str, result: &str, message: &str| crate::audit::AuditRecord {
        at_ms: now_ms(),
        token: token.to_owned(),
        call: "ConsoleSignIn".into(),
        result: result.to_owned(),
        message: message.to_owned(),
        peer: format!("{peer} (console)"),
        ..Default::default()
    };
    let record = match crate::tokens::verify(&*c.ctx.store, form.token.trim()).await {
        Ok(Ok(r)) if matches!(r.grant, ferry_model::access::Grant::Caller { .. }) => r,
        Ok(Ok(r)) => {
            let m = format!(
                "token {:?} is a worker join token: it cannot sign in",
                r.name
            );
            crate::audit::record(&c.ctx, audit("", "PermissionDenied", &m)).await;
            return signin_page(StatusCode::FORBIDDEN, &form.next, Some(&m), c.tls);
        }
        Ok(Err(refused)) => {
            let m = refused.to_string();
            crate::audit::record(&c.ctx, audit("", "Unauthenticated", &m)).await;
            return signin_page(StatusCode::UNAUTHORIZED, &form.next, Some(&m), c.tls);
        }
        Err(e) => {
            let m = format!("the store did not answer: {e}");
            return signin_page(StatusCode::SERVICE_UNAVAILABLE, &form.next, Some(&m), c.tls);
        }
    };
    let now = now_ms();
    let id = c.sessions.open(
        &record.name,
        &record.sha256,
        session::expiry(now, record.expires_at_ms),
        now,
    );
    let mut a = audit(&record.name, "ok", "");
    if let ferry_model::access::Grant::Caller { team, role } = &record.grant {
        a.team = team.clone().unwrap_or_default();
        a.role = role.to_string();
    }
    crate::audit::record(&c.ctx, a).await;
    let ttl = std::time::Duration::from_millis(
        (session::expiry(now, record.expires_at_ms) - now).max(0) as u64,
    );
    let mut resp = Redirect::to(safe_next(&form.next)).into_response();
    let h = resp.headers_mut();
    for cookie in [
        session::set_cookie(session::COOKIE, &id, c.tls, ttl),
        session::set_cookie(session::SIGNIN_COOKIE, "", c.tls, std::time::Duration::ZERO),
    ] {
        if let Ok(v) = cookie.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

pub async fn signout(
    State(c): State<Arc<Console>>,
    v: Visitor,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    posted::<serde::de::IgnoredAny>(&v, &body)?;
    if let Some(id) = Console::session_id(&headers) {
        c.sessions.close(&id);
    }
    let cookie = session::set_cookie(session::COOKIE, "", c.tls, std::time::Duration::ZERO);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/signin")).into_response())
}

#[derive(Deserialize)]
struct TeamForm {
    #[serde(default)]
    team: String,
}

/// An installation-wide token's session picks the team its pages are about (a team's token
/// always sees its own team; scripts with a bearer token add `?team=T`).
pub async fn switch_team(
    State(c): State<Arc<Console>>,
    v: Visitor,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form: TeamForm = posted(&v, &body)?;
    let team = form.team.trim();
    if !team.is_empty() {
        ferry_model::names::check_name("team", team)
            .map_err(|e| Failure::bad_request(e.to_string()))?;
    }
    let id = Console::session_id(&headers).ok_or_else(|| {
        Failure::bad_request("only a signed-in session picks a team; scripts add ?team=T")
    })?;
    c.sessions.set_team(&id, team);
    see("/")
}

// ----- overview -----

fn schedule_cron(s: &v1::Schedule) -> &str {
    &s.cron
}

fn facts(backups: &[v1::Job]) -> Vec<health::BackupFact> {
    backups
        .iter()
        .map(|b| health::BackupFact {
            id: b.id.clone(),
            state: job_state(b.state).to_owned(),
            finished_at_ms: b.finished_at_ms,
        })
        .collect()
}

fn backup_button(v: &Visitor, app: &str) -> Markup {
    html! {
        @if can(&v.caller, "CreateBackup") {
            form.inline method="post" action="/backups" {
                (csrf(v))
                input type="hidden" name="app" value=(app);
                button.backup-now type="submit" aria-label={ "Back up " (app) " now" } { "Back up now" }
            }
        }
    }
}

pub async fn overview(State(c): State<Arc<Console>>, v: Visitor) -> Page {
    let now = now_ms();
    let apps = c.apps(&v).await?;
    let schedules = c.schedule_list(&v).await?;
    let mut rows = Vec::new();
    for app in &apps {
        let backups = c.backups_of(&v, &app.name, 50).await?;
        let own: Vec<&v1::Schedule> = schedules.iter().filter(|s| s.app == app.name).collect();
        let sfacts: Vec<health::ScheduleFact> = own
            .iter()
            .map(|s| health::ScheduleFact {
                name: s.name.clone(),
                paused: s.paused,
                period_ms: health::period_ms(schedule_cron(s), &s.tz, now),
            })
            .collect();
        let verdict = health::verdict(&facts(&backups), &sfacts, now);
        rows.push((app.name.clone(), verdict, (app, backups, own)));
    }
    health::sort_problems_first(&mut rows);
    let problems = rows.iter().filter(|r| r.1.severity() > 0).count();
    let body = html! {
        p.summary { (apps.len()) " apps · " strong { (problems) } " with problems" }
        @if apps.is_empty() {
            p { "No apps yet: " code { "ferry app apply -f app.yaml" } " registers one." }
        } @else {
            div.scroll {
            table #apps {
                caption.visually-hidden { "Apps, problems first" }
                thead { tr {
                    th scope="col" { "App" } th scope="col" { "Health" } th scope="col" { "Last backup" }
                    th scope="col" { "Size" } th scope="col" { "Schedules" } th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for (name, verdict, (app, backups, own)) in &rows {
                        @let last = backups.first();
                        tr data-app=(name) {
                            th scope="row" { a href={ "/backups?app=" (name) } { (name) } br; small { "cluster " (app.cluster) } }
                            td {
                                span class={ "health h-" (verdict.severity()) } { (verdict.label()) }
                                @if verdict.problems.len() > 1 {
                                    ul.problems { @for p in &verdict.problems { li { (p.describe()) } } }
                                }
                            }
                            td {
                                @if let Some(b) = last {
                                    a href={ "/backups/" (b.id) } { (age(if b.finished_at_ms > 0 { b.finished_at_ms } else { b.created_at_ms }, now)) }
                                    " " (badge(job_state(b.state)))
                                } @else { "never" }
                            }
                            td { @if let Some(b) = last { (size(b.stored_bytes)) } @else { "-" } }
                            td {
                                @if own.is_empty() { "none" }
                                ul.plain { @for s in own {
                                    li { (s.name) ": "
                                        @if s.paused { "paused" } @else { "next " (until(s.next_run_ms, now)) }
                                    }
                                } }
                            }
                            td { (backup_button(&v, name)) }
                        }
                    }
                }
            }
            }
        }
    };
    ok(views::page(&v, Nav::Overview, "Overview", body))
}

// ----- backups -----

pub async fn backups(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Query(q): Query<BackupQuery>,
) -> Page {
    let now = now_ms();
    let filter = BackupFilter::parse(&q).map_err(Failure::bad_request)?;
    let apps = c.apps(&v).await?;
    let storages = c.storage_names(&v).await?;
    let all = c
        .backups_of(&v, filter.app.as_deref().unwrap_or(""), 200)
        .await?;
    let shown: Vec<&v1::Job> = all
        .iter()
        .filter(|j| filter.matches(j, job_state(j.state)))
        .collect();
    let selected = |cur: &Option<String>, x: &str| cur.as_deref() == Some(x);
    let body = html! {
        @if can(&v.caller, "CreateBackup") && !apps.is_empty() {
            section aria-labelledby="new-backup" {
                h2 #new-backup { "Back up now" }
                form.row method="post" action="/backups" {
                    (csrf(&v))
                    label { "App " select #backup-app name="app" {
                        @for a in &apps { option value=(a.name) selected[selected(&filter.app, &a.name)] { (a.name) } }
                    } }
                    label { "Storage " select name="storage" {
                        option value="" { "default of the app's cluster" }
                        @for s in &storages { option value=(s) { (s) } }
                    } }
                    button #backup-now type="submit" { "Back up now" }
                }
            }
        }
        section aria-labelledby="filter" {
            h2 #filter { "Filter" }
            form.row method="get" action="/backups" {
                label { "App " select name="app" {
                    option value="" { "any" }
                    @for a in &apps { option value=(a.name) selected[selected(&filter.app, &a.name)] { (a.name) } }
                } }
                label { "State " select name="state" {
                    option value="" { "any" }
                    @for s in STATES { option value=(s) selected[selected(&filter.state, s)] { (s) } }
                } }
                label { "Trigger " input type="text" name="trigger" value=(filter.trigger.clone().unwrap_or_default())
                    placeholder="manual, schedule/…" size="14"; }
                label { "Storage " select name="storage" {
                    option value="" { "any" }
                    @for s in &storages { option value=(s) selected[selected(&filter.storage, s)] { (s) } }
                } }
                button type="submit" { "Filter" }
                @if filter.any() { " " a href="/backups" { "Clear" } }
            }
        }
        p.summary { (shown.len()) " backups" @if filter.any() { " matching" } " (newest first, of the newest " (all.len()) ")" }
        div.scroll {
        table #backups {
            caption.visually-hidden { "Backups, newest first" }
            thead { tr {
                th scope="col" { "Backup" } th scope="col" { "App" } th scope="col" { "State" } th scope="col" { "Trigger" }
                th scope="col" { "Storage" } th scope="col" { "Created" } th scope="col" { "Duration" } th scope="col" { "Size" } th scope="col" { "Stored" }
            } }
            tbody {
                @for j in &shown {
                    tr {
                        th scope="row" { a href={ "/backups/" (j.id) } { (j.id) } }
                        td { (j.app) }
                        td { (badge(job_state(j.state))) }
                        td { (j.trigger) }
                        td { (j.storage) }
                        td { (when(j.created_at_ms, now)) }
                        td { (views::duration(j.started_at_ms, j.finished_at_ms, now)) }
                        td { (size(j.bytes)) }
                        td { (size(j.stored_bytes)) }
                    }
                }
            }
        }
        }
    };
    ok(views::page(&v, Nav::Backups, "Backups", body))
}

#[derive(Deserialize)]
struct BackupForm {
    app: String,
    #[serde(default)]
    storage: String,
}

pub async fn create_backup(State(c): State<Arc<Console>>, v: Visitor, body: Bytes) -> Page {
    let form: BackupForm = posted(&v, &body)?;
    let req = v1::CreateBackupRequest {
        team: v.team.clone(),
        app: form.app,
        storage: form.storage,
        ..Default::default()
    };
    let job = c
        .call(&v, "CreateBackup", req, |a, r| a.create_backup(r))
        .await?;
    see(&format!("/jobs/{}", job.id))
}

pub async fn backup(State(c): State<Arc<Console>>, v: Visitor, Path(id): Path<String>) -> Page {
    let now = now_ms();
    let j = c.get_backup(&v, &id).await?;
    let state = job_state(j.state);
    let trace = c.trace_url(&j.trace_id);
    let mut labels: Vec<String> = j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let body = html! {
        div.actions {
            @if !views::is_final(j.state) {
                a.button href={ "/jobs/" (j.id) } { "Watch live" }
                (views::cancel_button(&v, &j))
            }
            @if state == "Completed" && can(&v.caller, "CreateRestore") {
                a.button #restore href={ "/backups/" (j.id) "/restore" } { "Restore…" }
            }
        }
        dl.facts #backup-facts {
            dt { "State" } dd #backup-state { (badge(state)) }
            dt { "App" } dd { (j.app) " (team " (j.team) ", cluster " (j.cluster) ")" }
            dt { "Storage" } dd { (j.storage) }
            dt { "Trigger" } dd { (j.trigger) }
            dt { "Created" } dd { (when(j.created_at_ms, now)) }
            dt { "Started" } dd { (when(j.started_at_ms, now)) }
            dt { "Finished" } dd { (when(j.finished_at_ms, now)) }
            dt { "Duration" } dd { (views::duration(j.started_at_ms, j.finished_at_ms, now)) }
            dt { "Size" } dd { (size(j.bytes)) " read, " (size(j.stored_bytes)) " stored" }
            @if j.expires_at_ms > 0 { dt { "Expires" } dd { (when(j.expires_at_ms, now)) } }
            dt { "Signed by" } dd #signer { @if j.signer.is_empty() { "-" } @else { (j.signer) } }
            dt { "Trace" } dd #trace {
                @if j.trace_id.is_empty() { "-" }
                @else if let Some(url) = &trace { a href=(url) rel="noopener noreferrer" { code { (j.trace_id) } } }
                @else { code { (j.trace_id) } }
            }
            @if !labels.is_empty() { dt { "Labels" } dd { (labels.join(", ")) } }
            @if !j.message.is_empty() { dt { "Message" } dd.message { (j.message) } }
        }
        h2 { "Shards" }
        div.scroll {
        table.shards #shards {
            thead { tr {
                th scope="col" { "Shard" } th scope="col" { "Kind" } th scope="col" { "State" } th scope="col" { "Worker" }
                th scope="col" { "Attempts" } th scope="col" { "Size" } th scope="col" { "Stored" } th scope="col" { "Duration" }
                th scope="col" { "SHA-256" } th scope="col" { "Detail" }
            } }
            tbody {
                @for s in &j.shards {
                    tr {
                        th scope="row" { code { (s.id) } br; small { (s.resource) } }
                        td { (s.kind) @if !s.tool_version.is_empty() { br; small { (s.tool_version) } } }
                        td { (badge(views::shard_state(s.state))) }
                        td { (s.worker) }
                        td { (s.attempt) }
                        td { (size(s.bytes_done)) }
                        td { (size(s.stored_bytes)) }
                        td { (views::duration(s.started_at_ms, s.finished_at_ms, now)) }
                        td.hash { code { (s.sha256) } }
                        td { @if !s.error.is_empty() { span.error { (s.error) } } @if !s.detail.is_empty() { small { (s.detail) } } }
                    }
                }
            }
        }
        }
    };
    ok(views::page(
        &v,
        Nav::Backups,
        &format!("Backup {}", j.id),
        body,
    ))
}

// ----- restore -----

pub async fn restore_form(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
) -> Page {
    let j = c.get_backup(&v, &id).await?;
    calls::allows(&v.caller, "CreateRestore").map_err(Failure::from)?;
    let spec = c
        .call(
            &v,
            "GetApp",
            v1::GetAppRequest {
                team: v.team.clone(),
                name: j.app.clone(),
            },
            |a, r| a.get_app(r),
        )
        .await
        .ok()
        .and_then(|app| ferry_model::app::AppSpec::from_yaml(&app.spec_yaml).ok());
    let proposed: Vec<String> = spec
        .as_ref()
        .map(|s| {
            rewrites::propose(s)
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default();
    let in_place = v.caller.require(Action::RestoreOverwrite).is_ok();
    let body = html! {
        p { "Backup " a href={ "/backups/" (j.id) } { (j.id) } " of app " strong { (j.app) } ", " (views::time(j.created_at_ms)) "." }
        section aria-labelledby="copy" {
            h2 #copy { "Into a new app" }
            p { "The copy gets its own name; the rewrites move its paths and database names so it never lands on the original. Each line is OLD=NEW; the first rule that matches a value wins, and a path rule also moves everything beneath it." }
            @if spec.is_none() { p.note { "The app's spec is not registered any more: no rewrites are proposed." } }
            form.stack #restore-copy-form method="post" action={ "/backups/" (j.id) "/restore" } {
                (csrf(&v))
                input type="hidden" name="mode" value="copy";
                label for="to_app" { "New app name" }
                input #to_app type="text" name="to_app" value=(rewrites::copy_name(&j.app)) required;
                label for="rewrites" { "Rewrites (OLD=NEW, one per line)" }
                textarea #rewrites name="rewrites" rows="6" spellcheck="false" { (proposed.join("\n")) }
                label.check { input type="checkbox" name="numeric_owner" value="true"; " Owners by number (like tar --numeric-owner)" }
                button #restore-copy type="submit" { "Restore into the new app" }
            }
        }
        @if in_place {
            section aria-labelledby="in-place" {
                h2 #in-place { "In place" }
                p { "Replaces what " strong { (j.app) } " holds now. A safety backup of its current state is taken first and linked from the result." }
                form.stack method="post" action={ "/backups/" (j.id) "/restore" } {
                    (csrf(&v))
                    input type="hidden" name="mode" value="in-place";
                    label for="confirm" { "Type the app's name (" (j.app) ") to confirm" }
                    input #confirm type="text" name="confirm" autocomplete="off" required;
                    button.danger #restore-in-place type="submit" { "Restore in place" }
                }
            }
        }
    };
    ok(views::page(
        &v,
        Nav::Backups,
        &format!("Restore {}", j.id),
        body,
    ))
}

#[derive(Deserialize)]
struct RestoreForm {
    mode: String,
    #[serde(default)]
    to_app: String,
    #[serde(default)]
    rewrites: String,
    #[serde(default)]
    numeric_owner: Option<String>,
    #[serde(default)]
    confirm: String,
}

pub async fn create_restore(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    let form: RestoreForm = posted(&v, &body)?;
    let req = match form.mode.as_str() {
        "copy" => v1::CreateRestoreRequest {
            team: v.team.clone(),
            backup_id: id,
            to_app: form.to_app.trim().to_owned(),
            rewrites: rewrites::parse_lines(&form.rewrites).map_err(Failure::bad_request)?,
            numeric_owner: form.numeric_owner.is_some(),
            ..Default::default()
        },
        "in-place" => {
            let backup = c.get_backup(&v, &id).await?;
            if !rewrites::confirmed(&backup.app, &form.confirm) {
                return Err(Failure::bad_request(format!(
                    "An in-place restore needs the app's name typed exactly ({}); nothing was restored.",
                    backup.app
                )));
            }
            v1::CreateRestoreRequest {
                team: v.team.clone(),
                backup_id: id,
                overwrite: true,
                ..Default::default()
            }
        }
        other => {
            return Err(Failure::bad_request(format!(
                "unknown restore mode {other:?}"
            )));
        }
    };
    let job = c
        .call(&v, "CreateRestore", req, |a, r| a.create_restore(r))
        .await?;
    see(&format!("/jobs/{}", job.id))
}

// ----- live jobs -----

/// At most this many jobs of the live-jobs page follow their events (a browser opens few
/// connections to one site at once); the others show their state at load.
const LIVE_ON_ONE_PAGE: usize = 4;

pub async fn jobs(State(c): State<Arc<Console>>, v: Visitor) -> Page {
    let now = now_ms();
    let mut all = c.backups_of(&v, "", 50).await?;
    let restores = c
        .call(
            &v,
            "ListRestores",
            v1::ListRestoresRequest {
                team: v.team.clone(),
                page_size: 50,
                ..Default::default()
            },
            |a, r| a.list_restores(r),
        )
        .await?
        .jobs;
    all.extend(restores);
    all.sort_by_key(|j| std::cmp::Reverse(j.created_at_ms));
    let (active, done): (Vec<&v1::Job>, Vec<&v1::Job>) =
        all.iter().partition(|j| !views::is_final(j.state));
    let body = html! {
        @if active.is_empty() { p.summary #no-active { "Nothing is running." } }
        @for (i, j) in active.iter().enumerate() {
            section.job aria-labelledby={ "job-" (j.id) } {
                h2 id={ "job-" (j.id) } { a href={ "/jobs/" (j.id) } { (views::kind(j.kind)) " " (j.id) } " · " (j.app) }
                @if i < LIVE_ON_ONE_PAGE {
                    div.live data-live={ "/jobs/" (j.id) "/events" } aria-live="polite" { (views::job_live(j, now)) }
                } @else {
                    div { (views::job_live(j, now)) }
                }
            }
        }
        h2 { "Recently finished" }
        ul.plain #finished {
            @for j in done.iter().take(10) {
                li { a href={ "/jobs/" (j.id) } { (views::kind(j.kind)) " " (j.id) } " · " (j.app) " · " (badge(job_state(j.state))) " · " (age(j.finished_at_ms, now)) }
            }
        }
    };
    ok(views::page(&v, Nav::Jobs, "Live jobs", body))
}

pub async fn job(State(c): State<Arc<Console>>, v: Visitor, Path(id): Path<String>) -> Page {
    let now = now_ms();
    let j = c.current_job(&v, &id).await?;
    let trace = c.trace_url(&j.trace_id);
    let title = format!(
        "{} {}",
        match views::kind(j.kind) {
            "backup" => "Backup",
            "restore" => "Restore",
            "verify" => "Verify",
            _ => "Job",
        },
        j.id
    );
    let body = html! {
        p { "App " strong { (j.app) } " · started " (when(j.created_at_ms, now))
            @if let Some(url) = &trace { " · " a href=(url) rel="noopener noreferrer" { "trace" } } }
        (views::job_links(&j))
        div.actions { (views::cancel_button(&v, &j)) }
        div #live.live data-live={ "/jobs/" (j.id) "/events" } aria-live="polite" { (views::job_live(&j, now)) }
    };
    ok(views::page(&v, Nav::Jobs, &title, body))
}

#[derive(Deserialize)]
struct CancelForm {
    kind: String,
}

pub async fn cancel(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    let form: CancelForm = posted(&v, &body)?;
    let req = v1::GetJobRequest {
        team: v.team.clone(),
        id: id.clone(),
    };
    match form.kind.as_str() {
        "backup" => {
            c.call(&v, "CancelBackup", req, |a, r| a.cancel_backup(r))
                .await?
        }
        "restore" => {
            c.call(&v, "CancelRestore", req, |a, r| a.cancel_restore(r))
                .await?
        }
        other => {
            return Err(Failure::bad_request(format!(
                "cannot cancel a {other:?} job"
            )));
        }
    };
    see(&format!("/jobs/{id}"))
}

// ----- schedules -----

pub async fn schedules(State(c): State<Arc<Console>>, v: Visitor) -> Page {
    let now = now_ms();
    let list = c.schedule_list(&v).await?;
    let operate = can(&v.caller, "PauseSchedule");
    let (apps, storages) = if can(&v.caller, "CreateSchedule") {
        (c.apps(&v).await?, c.storage_names(&v).await?)
    } else {
        (Vec::new(), Vec::new())
    };
    let body = html! {
        div.scroll {
        table #schedules {
            caption.visually-hidden { "Schedules" }
            thead { tr {
                th scope="col" { "Schedule" } th scope="col" { "App" } th scope="col" { "When" } th scope="col" { "Keep" }
                th scope="col" { "Next runs" } th scope="col" { "Last run" } th scope="col" { "Runs" } th scope="col" { span.visually-hidden { "Actions" } }
            } }
            tbody {
                @for s in &list {
                    tr {
                        th scope="row" { (s.name) @if s.paused { " " (badge("Paused")) } }
                        td { (s.app) }
                        td { code { @if s.every.is_empty() { (s.cron) } @else { (s.every) } } " " small { (s.tz) } }
                        td { @if s.keep == 0 { "all" } @else { (s.keep) } }
                        td {
                            @if s.paused { "paused" } @else {
                                ul.plain { @for at in health::next_runs(&s.cron, &s.tz, now, 3) { li { (time(at)) " (" (until(at, now)) ")" } } }
                            }
                        }
                        td { (when(s.last_run_ms, now)) @if !s.last_backup.is_empty() { br; a href={ "/backups/" (s.last_backup) } { (s.last_backup) } } }
                        td { (s.runs) @if s.skipped > 0 { " (" (s.skipped) " skipped)" } }
                        td {
                            @if operate {
                                @let action = if s.paused { "resume" } else { "pause" };
                                form.inline method="post" action={ "/schedules/" (s.name) "/" (action) } {
                                    (csrf(&v))
                                    button type="submit" { @if s.paused { "Resume" } @else { "Pause" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        }
        @if list.is_empty() { p { "No schedules." } }
        @if can(&v.caller, "CreateSchedule") {
            section aria-labelledby="new-schedule" {
                h2 #new-schedule { "New schedule" }
                form.stack method="post" action="/schedules" {
                    (csrf(&v))
                    label for="s-name" { "Name" }
                    input #s-name type="text" name="name" required placeholder="nightly";
                    label for="s-app" { "App" }
                    select #s-app name="app" { @for a in &apps { option value=(a.name) { (a.name) } } }
                    label for="s-every" { "Every" }
                    select #s-every name="every" {
                        option value="" { "— use the cron expression below —" }
                        @for e in ["hourly", "daily", "weekly", "monthly"] { option value=(e) { (e) } }
                    }
                    label for="s-cron" { "Cron (5 fields: minute hour day month weekday)" }
                    input #s-cron type="text" name="cron" placeholder="30 2 * * *";
                    label for="s-tz" { "Time zone" }
                    input #s-tz type="text" name="tz" value="UTC";
                    label for="s-keep" { "Keep the newest (0: all)" }
                    input #s-keep type="number" name="keep" min="0" value="7";
                    label for="s-storage" { "Storage" }
                    select #s-storage name="storage" {
                        option value="" { "default of the app's cluster" }
                        @for s in &storages { option value=(s) { (s) } }
                    }
                    button type="submit" { "Create schedule" }
                }
            }
        }
    };
    ok(views::page(&v, Nav::Schedules, "Schedules", body))
}

#[derive(Deserialize)]
struct ScheduleForm {
    name: String,
    app: String,
    #[serde(default)]
    every: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    tz: String,
    #[serde(default)]
    keep: String,
    #[serde(default)]
    storage: String,
}

pub async fn create_schedule(State(c): State<Arc<Console>>, v: Visitor, body: Bytes) -> Page {
    let f: ScheduleForm = posted(&v, &body)?;
    let keep = match f.keep.trim() {
        "" => 0,
        k => k
            .parse()
            .map_err(|_| Failure::bad_request(format!("keep must be a number, not {k:?}")))?,
    };
    let req = v1::CreateScheduleRequest {
        team: v.team.clone(),
        name: f.name.trim().to_owned(),
        app: f.app,
        cron: f.cron.trim().to_owned(),
        every: f.every,
        tz: f.tz.trim().to_owned(),
        keep,
        storage: f.storage,
        // The console's form offers keep N only; `ferry schedule create --keep-window` sets a
        // window.
        keep_window_seconds: 0,
    };
    c.call(&v, "CreateSchedule", req, |a, r| a.create_schedule(r))
        .await?;
    see("/schedules")
}

pub async fn schedule_action(
    State(c): State<Arc<Console>>,
    v: Visitor,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Page {
    posted::<serde::de::IgnoredAny>(&v, &body)?;
    let req = v1::ScheduleRef {
        team: v.team.clone(),
        name,
    };
    match action.as_str() {
        "pause" => {
            c.call(&v, "PauseSchedule", req, |a, r| a.pause_schedule(r))
                .await?
        }
        "resume" => {
            c.call(&v, "ResumeSchedule", req, |a, r| a.resume_schedule(r))
                .await?
        }
        _ => {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "There is no such page.",
            ));
        }
    };
    see("/schedules")
}

// ----- workers and storage -----

pub async fn workers(State(c): State<Arc<Console>>, v: Visitor) -> Page {
    let now = now_ms();
    let clusters = c
        .call(&v, "ListClusters", v1::ListClustersRequest {}, |a, r| {
            a.list_clusters(r)
        })
        .await?
        .clusters;
    let workers = c
        .call(
            &v,
            "ListWorkers",
            v1::ListWorkersRequest::default(),
            |a, r| a.list_workers(r),
        )
        .await?
        .workers;
    let body = html! {
        h2 { "Clusters" }
        table #clusters {
            thead { tr { th scope="col" { "Cluster" } th scope="col" { "Workers" } th scope="col" { "Shard capacity" } } }
            tbody { @for cl in &clusters { tr { th scope="row" { (cl.name) } td { (cl.workers) } td { (cl.capacity) } } } }
        }
        @if clusters.is_empty() { p { "No worker is connected." } }
        h2 { "Workers" }
        div.scroll {
        table #workers {
            thead { tr {
                th scope="col" { "Worker" } th scope="col" { "Cluster" } th scope="col" { "Node" } th scope="col" { "Heartbeat" }
                th scope="col" { "Running shards" } th scope="col" { "Version" } th scope="col" { "Tools" }
            } }
            tbody {
                @for w in &workers {
                    @let tools: BTreeMap<&String, &String> = w.tools.iter().collect();
                    tr {
                        th scope="row" { code { (w.id) } }
                        td { (w.cluster) }
                        td { (w.node) }
                        td { (age(w.last_heartbeat_ms, now)) }
                        td { (w.running_shards) " of " (w.max_shards) }
                        td { (w.version) }
                        td { ul.plain.tools { @for (k, t) in tools { li { (k) ": " small { (t) } } } } }
                    }
                }
            }
        }
        }
    };
    ok(views::page(&v, Nav::Workers, "Workers and clusters", body))
}

pub async fn storage(State(c): State<Arc<Console>>, v: Visitor) -> Page {
    let locations = c
        .call(&v, "ListStorage", v1::ListStorageRequest {}, |a, r| {
            a.list_storage(r)
        })
        .await?
        .locations;
    let body = html! {
        div.scroll {
        table #storage {
            thead { tr { th scope="col" { "Location" } th scope="col" { "Kind" } th scope="col" { "Where" } th scope="col" { "Encryption" } } }
            tbody {
                @for l in &locations {
                    tr {
                        th scope="row" { (l.name) }
                        @match &l.backend {
                            Some(v1::storage_location::Backend::Local(x)) => {
                                td { "local" } td { code { (x.path) } " on cluster " (x.cluster) }
                            }
                            Some(v1::storage_location::Backend::S3(s)) => {
                                td { "s3" }
                                td { code { (s.endpoint) } " bucket " code { (s.bucket) }
                                    @if !s.prefix.is_empty() { " prefix " code { (s.prefix) } }
                                    @if !s.region.is_empty() { " region " (s.region) }
                                    br; small { "credentials from the variables " (s.access_key_env) " and " (s.secret_key_env) } }
                            }
                            None => { td { "?" } td { "-" } }
                        }
                        td {
                            @if l.encrypt_to.is_empty() { "none" } @else {
                                (l.encrypt_to.len()) " age recipient(s)"
                                ul.plain { @for r in &l.encrypt_to { li { code.hash { (r) } } } }
                            }
                        }
                    }
                }
            }
        }
        }
    };
    ok(views::page(&v, Nav::Storage, "Storage locations", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next("/backups?app=x"), "/backups?app=x");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next(""), "/");
        assert_eq!(safe_next("/signout"), "/");
        assert_eq!(safe_next("/x\r\nSet-Cookie: a=b"), "/");
    }

    fn visitor(csrf: Option<&str>) -> Visitor {
        Visitor {
            caller: crate::auth::Caller {
                token: "t".into(),
                team: Some("a".into()),
                role: ferry_model::access::Role::Operator,
                expires_at_ms: None,
            },
            team: String::new(),
            peer: String::new(),
            csrf: csrf.map(str::to_owned),
        }
    }

    #[test]
    fn forms_of_a_session_need_its_csrf_token() {
        #[derive(Deserialize, Debug)]
        struct F {
            app: String,
        }
        let v = visitor(Some("abc"));
        let e = posted::<F>(&v, &Bytes::from_static(b"app=shop")).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = posted::<F>(&v, &Bytes::from_static(b"app=shop&csrf=abd")).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let f = posted::<F>(&v, &Bytes::from_static(b"app=shop&csrf=abc")).unwrap();
        assert_eq!(f.app, "shop");
        // A bearer token (no session) needs none: a browser cannot be made to send one.
        assert!(posted::<F>(&visitor(None), &Bytes::from_static(b"app=shop")).is_ok());
    }
}
