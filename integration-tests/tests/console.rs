//! The web console end to end: a real controller (TLS, tokens) serving the console, a real
//! worker process, and a real headless Chromium driven over WebDriver — signing in, the
//! overview, a backup followed live to Completed, its detail page, a restore into a copy found on
//! disk, what a viewer sees and may not do, another team's backup looking missing — plus plain
//! HTTPS requests for what a browser cannot show (statuses, cookies, no token, no CSRF token).
//! Each browser test saves screenshots (`FERRY_UPDATE_SCREENSHOTS=1` also copies the README's
//! into docs/screenshots/).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::Locator;
use ferry_integration_tests::{Cluster, big_volume, free_port, listing};
use ferry_test_support::browser::{Browser, HttpAnswer, https};

/// A console installation: controller with `--http-listen`, one worker of cluster `local`, a
/// storage location, and two apps of team `default` with volumes in the scratch directory.
struct Setup {
    c: Cluster,
    port: u16,
    shop: PathBuf,
    rt: tokio::runtime::Runtime,
}

const TRACE_TEMPLATE: &str = "http://jaeger.invalid/trace/{trace_id}";

fn setup() -> Setup {
    // Fails loudly, naming what is missing, before anything starts.
    ferry_test_support::browser::require_tools();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = Cluster::start(&[
        "--no-embedded-worker",
        "--http-listen",
        &listen,
        "--trace-url-template",
        TRACE_TEMPLATE,
    ]);
    c.add_local_storage("local", "local");
    c.add_worker("local", "node-1");
    // Three volumes in two components: three shards, one after the other (the worker takes
    // one at a time), so the job is seen running before it completes.
    let shop = c.path().join("srv/shop");
    ferry_archive::sample::generate(&shop.join("files"), 7).expect("sample files");
    big_volume(&shop.join("uploads"), 2, 8);
    big_volume(&shop.join("media"), 1, 8);
    c.apply(&format!(
        "name: shop\ncluster: local\ncomponents:\n  - name: web\n    volumes:\n      - {{name: files, path: {0}/files}}\n      - {{name: uploads, path: {0}/uploads}}\n  - name: media\n    volumes:\n      - {{name: media, path: {0}/media}}\n",
        shop.display()
    ))
    .expect_code(0);
    let blog = c.path().join("srv/blog");
    ferry_archive::sample::generate(&blog, 8).expect("sample files");
    c.apply_volume_app("blog", "local", ("web", "files"), &blog);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    Setup { c, port, shop, rt }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A caller token of `team` with `role`; its secret.
    fn token(&self, name: &str, team: &str, role: &str) -> String {
        let run = self
            .c
            .ferry(&[
                "token", "create", name, "--team", team, "--role", role, "-o", "json",
            ])
            .expect_code(0);
        run.json()["token"].as_str().expect("a secret").to_owned()
    }

    async fn browser(&self) -> Browser {
        Browser::start(self.c.path(), &self.c.pki.server_key, &screenshot_dir()).await
    }

    async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpAnswer {
        https(self.port, &self.c.pki.ca, method, path, headers, body).await
    }

    fn backups(&self) -> usize {
        self.c
            .ferry(&["backup", "list", "-o", "json"])
            .expect_code(0)
            .json()["backups"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }
}

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// Copies a screenshot into docs/screenshots/ when asked to (`FERRY_UPDATE_SCREENSHOTS=1`).
fn publish(shot: &Path, name: &str) {
    if std::env::var_os("FERRY_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::copy(shot, docs.join(format!("{name}.png"))).expect("copying a screenshot");
    }
}

/// Signs in through the form and waits for the overview.
async fn sign_in(b: &Browser, s: &Setup, token: &str) {
    b.open(&s.url("/"), "#token").await;
    let field = b
        .client
        .find(Locator::Css("#token"))
        .await
        .expect("the token field");
    field.send_keys(token).await.expect("typing the token");
    b.client
        .find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("signing in");
    b.wait_for("#who").await;
}

/// Elements reaching past the window's right edge, other than inside a table's own scroller.
const STICKING_OUT: &str = "return Array.from(document.querySelectorAll('body *'))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
        && !(e.parentElement && e.parentElement.closest('.scroll')))
    .map(e => e.tagName + '.' + e.className + '#' + e.id).join(', ')
    + ' (page ' + document.documentElement.scrollWidth + ' px, window ' + window.innerWidth + ' px)';";

fn job_id_of(url: &str) -> String {
    url.rsplit("/jobs/")
        .next()
        .expect("a job URL")
        .trim_end_matches('/')
        .to_owned()
}

async fn wait_completed(b: &Browser) {
    b.wait_until(
        "the job's state to reach Completed",
        "document.querySelector('#job-state') && document.querySelector('#job-state').dataset.state === 'Completed'",
        Duration::from_secs(90),
    )
    .await;
}

#[test]
fn an_operator_signs_in_backs_up_live_and_restores_a_copy() {
    let s = setup();
    let op = s.token("ops", "default", "operator");
    // A schedule the overview lists with its next run, and a paused one it calls a problem.
    s.c.ferry(&[
        "schedule",
        "create",
        "nightly",
        "--app",
        "shop",
        "--cron",
        "30 2 * * *",
        "--keep",
        "7",
    ])
    .expect_code(0);
    s.c.ferry(&[
        "schedule", "create", "hourly", "--app", "blog", "--every", "hourly",
    ])
    .expect_code(0);
    s.c.ferry(&["schedule", "pause", "hourly"]).expect_code(0);
    s.rt.block_on(async {
        let b = s.browser().await;
        sign_in(&b, &s, &op).await;
        // The overview lists every app of the team.
        b.wait_for("#apps").await;
        let apps = b.text("#apps").await;
        assert!(apps.contains("shop") && apps.contains("blog"), "{apps}");
        assert!(b.text("#who").await.contains("operator"));
        assert!(apps.contains("never backed up"), "{apps}");
        let blog = b.text("tr[data-app='blog']").await;
        assert!(blog.contains("schedule hourly is paused"), "{blog}");
        let shop_row = b.text("tr[data-app='shop']").await;
        assert!(shop_row.contains("nightly: next in"), "{shop_row}");
        // Problems first: blog (never backed up, paused) before shop (never backed up).
        let first = b.client.find(Locator::Css("#apps tbody tr")).await.unwrap();
        assert_eq!(
            first.attr("data-app").await.unwrap().as_deref(),
            Some("blog")
        );
        b.screenshot("overview-before").await;

        // Back up now, from the overview: the live job page follows it to Completed.
        b.client
            .find(Locator::Css("tr[data-app='shop'] button.backup-now"))
            .await
            .expect("a backup button for shop")
            .click()
            .await
            .expect("clicking Back up now");
        b.wait_for("#live[data-following='true']").await;
        let url = b.client.current_url().await.expect("a URL").to_string();
        assert!(url.contains("/jobs/"), "{url}");
        let id = job_id_of(&url);
        b.client
            .execute("window.ferryMarker = 42; return true;", vec![])
            .await
            .expect("marking the page");
        let first = b.text("#job-state").await;
        // The README's picture: mid-way if the job is seen there (one shard done, not all),
        // else as it is when it first shows (no assertion on timing either way).
        let midway = "document.querySelector('#live .s-succeeded') && document.querySelector('#job-state').dataset.state !== 'Completed'";
        let mut live = b.screenshot("live-job").await;
        for _ in 0..100 {
            let seen = b.client.execute(&format!("return !!({midway});"), vec![]).await;
            if seen.ok() == Some(serde_json::json!(true)) {
                live = b.screenshot("live-job").await;
                break;
            }
            if b.text("#job-state").await.trim() == "Completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        wait_completed(&b).await;
        let kept = b
            .client
            .execute("return window.ferryMarker === 42;", vec![])
            .await
            .expect("reading the mark");
        assert_eq!(kept, serde_json::json!(true), "the page was reloaded");
        b.wait_for("#live[data-ended='true']").await;
        // Nothing is left to cancel.
        let hidden = b
            .client
            .execute("return document.querySelector('#cancel-form') === null || document.querySelector('#cancel-form').hidden;", vec![])
            .await
            .expect("a script");
        assert_eq!(hidden, serde_json::json!(true), "a cancel button for a finished job");
        eprintln!("the job page first showed {first:?}, then Completed through its events");
        publish(&live, "live-job");
        // Every shard's bar is full.
        assert!(b.count("#live progress").await >= 2);

        // The backup's detail: shards, SHA-256, signer, the trace linked through the template.
        b.open(&s.url(&format!("/backups/{id}")), "#backup-facts")
            .await;
        assert_eq!(b.text("#backup-state").await, "Completed");
        let shards = b.text("#shards").await;
        assert!(
            shards
                .split_whitespace()
                .any(|w| w.len() == 64 && w.bytes().all(|c| c.is_ascii_hexdigit())),
            "no SHA-256 in {shards}"
        );
        assert!(b.text("#signer").await.contains("this installation"));
        let trace = b
            .client
            .find(Locator::Css("#trace a"))
            .await
            .expect("a trace link")
            .attr("href")
            .await
            .expect("href")
            .expect("an href");
        assert!(trace.starts_with("http://jaeger.invalid/trace/"), "{trace}");
        publish(&b.screenshot("backup-detail").await, "backup-detail");

        // Restore into a copy: the form proposes the copy's name and the usual rewrite.
        b.client
            .find(Locator::Css("#restore"))
            .await
            .expect("a restore button")
            .click()
            .await
            .expect("opening the restore form");
        b.wait_for("#restore-copy-form").await;
        let to_app = b.client.find(Locator::Css("#to_app")).await.unwrap();
        assert_eq!(
            to_app.prop("value").await.unwrap().as_deref(),
            Some("shop-copy")
        );
        let rewrites = b
            .client
            .find(Locator::Css("#rewrites"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        for volume in ["files", "uploads", "media"] {
            let from = s.shop.join(volume);
            assert!(
                rewrites.contains(&format!("{}={}-copy", from.display(), from.display())),
                "{rewrites}"
            );
        }
        b.screenshot("restore-form").await;
        b.client
            .find(Locator::Css("#restore-copy"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_for("#live").await;
        wait_completed(&b).await;
        b.screenshot("restore-completed").await;

        // The copy is on disk, file for file, and registered as its own app.
        for volume in ["files", "uploads", "media"] {
            let from = s.shop.join(volume);
            let to = s.shop.join(format!("{volume}-copy"));
            assert!(
                !listing(&to).is_empty(),
                "nothing restored into {}",
                to.display()
            );
            assert_eq!(listing(&to), listing(&from), "{volume}");
        }
        let original = std::fs::read(s.shop.join("uploads/blob-0.bin")).unwrap();
        let copied = std::fs::read(s.shop.join("uploads-copy/blob-0.bin")).unwrap();
        assert!(copied == original, "the copy's bytes differ");
        s.c.ferry(&["app", "get", "shop-copy"]).expect_code(0);

        // The live jobs page lists both as finished.
        b.open(&s.url("/jobs"), "#finished").await;
        let finished = b.text("#finished").await;
        assert!(finished.contains(&id) && finished.contains("shop-copy"), "{finished}");

        // Schedules: create one in the form, pause it, resume it.
        b.open(&s.url("/schedules"), "#s-name").await;
        b.client.find(Locator::Css("#s-name")).await.unwrap().send_keys("weekly-blog").await.unwrap();
        b.client.find(Locator::Css("#s-app")).await.unwrap().select_by_value("blog").await.unwrap();
        b.client.find(Locator::Css("#s-every")).await.unwrap().select_by_value("weekly").await.unwrap();
        b.client
            .find(Locator::Css("form[action='/schedules'] button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_for("form[action='/schedules/weekly-blog/pause']").await;
        let row = b.text("#schedules").await;
        assert!(row.contains("weekly-blog") && row.contains("weekly"), "{row}");
        b.client
            .find(Locator::Css("form[action='/schedules/weekly-blog/pause'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_for("form[action='/schedules/weekly-blog/resume']").await;
        b.screenshot("schedules").await;
        let paused = s.c.ferry(&["schedule", "get", "weekly-blog", "-o", "json"]).expect_code(0).json();
        assert_eq!(paused["paused"], serde_json::json!(true), "{paused}");

        // The overview now says shop is fine and lists the copy.
        b.open(&s.url("/"), "#apps").await;
        let row = b.text("tr[data-app='shop']").await;
        assert!(row.contains("ok") && row.contains("Completed"), "{row}");
        assert!(b.text("#apps").await.contains("shop-copy"));
        publish(&b.screenshot("overview").await, "overview");
        // Readable on a phone: nothing wider than the screen but the tables' own scrollers.
        b.client.set_window_size(390, 844).await.expect("a phone-sized window");
        b.open(&s.url("/"), "#apps").await;
        let fits = b
            .client
            .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", vec![])
            .await
            .expect("a script");
        publish(&b.screenshot("overview-phone").await, "overview-phone");
        // What sticks out, if anything (for the failure message).
        let wide = b
            .client
            .execute(STICKING_OUT, vec![])
            .await
            .expect("a script");
        assert_eq!(fits, serde_json::json!(true), "the page scrolls sideways on a phone: {wide}");
        b.close().await;
    });
}

#[test]
fn a_viewer_sees_no_backup_or_restore_buttons_and_its_forged_posts_are_refused() {
    let s = setup();
    let viewer = s.token("watcher", "default", "viewer");
    let backup = s.c.backup_completed("shop", &[]);
    let id = backup["id"].as_str().expect("an id").to_owned();
    let before = s.backups();
    s.rt.block_on(async {
        let b = s.browser().await;
        sign_in(&b, &s, &viewer).await;
        b.wait_for("#apps").await;
        assert!(b.text("#who").await.contains("viewer"));
        assert_eq!(
            b.count("button.backup-now").await,
            0,
            "a backup button for a viewer"
        );
        b.screenshot("viewer-overview").await;
        b.open(&s.url("/backups"), "#backups").await;
        assert!(b.text("#backups").await.contains(&id));
        assert_eq!(b.count("#backup-now").await, 0);
        b.open(&s.url(&format!("/backups/{id}")), "#backup-facts")
            .await;
        assert_eq!(
            b.count("#restore").await,
            0,
            "a restore button for a viewer"
        );
        assert_eq!(b.count("#cancel").await, 0);
        b.open(&s.url("/schedules"), "#schedules").await;
        assert_eq!(b.count("form[action='/schedules']").await, 0);
        b.open(&s.url("/workers"), "#workers").await;
        let workers = b.text("#workers").await;
        assert!(
            workers.contains("node-1") && workers.contains("local"),
            "{workers}"
        );
        b.open(&s.url("/storage"), "#storage").await;
        assert!(b.text("#storage").await.contains("local"));
        b.open(&s.url(&format!("/backups/{id}/restore")), "h1")
            .await;
        assert!(
            b.text("main").await.contains("operator"),
            "{}",
            b.text("main").await
        );

        // Forged POSTs with the viewer's own session and CSRF token: refused by the role check.
        b.open(&s.url("/"), "#apps").await;
        let forge = |path: String, body: &'static str| {
            format!(
                "const done = arguments[arguments.length - 1];
                 const csrf = document.querySelector('input[name=csrf]').value;
                 fetch('{path}', {{method: 'POST', redirect: 'manual',
                     headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
                     body: 'csrf=' + encodeURIComponent(csrf) + '&{body}'}})
                   .then(r => r.text().then(t => done([r.status, t])))
                   .catch(e => done([0, String(e)]));"
            )
        };
        for (path, body) in [
            ("/backups".to_owned(), "app=shop"),
            (
                format!("/backups/{id}/restore"),
                "mode=copy&to_app=loot&rewrites=",
            ),
            (format!("/jobs/{id}/cancel"), "kind=backup"),
        ] {
            let answer = b
                .client
                .execute_async(&forge(path.clone(), body), vec![])
                .await
                .expect("a forged POST");
            assert_eq!(answer[0], serde_json::json!(403), "{path}: {answer}");
            assert!(
                answer[1].as_str().unwrap_or_default().contains("operator"),
                "{answer}"
            );
        }
        b.screenshot("viewer-refused").await;
        b.close().await;
    });
    assert_eq!(s.backups(), before, "a viewer's forged POST made a backup");
    let restores =
        s.c.ferry(&["restore", "list", "-o", "json"])
            .expect_code(0)
            .json();
    assert_eq!(restores["restores"].as_array().map(Vec::len), Some(0));
    // The refusals are in the audit trail like refused gRPC calls, marked as the console's.
    let denied: Vec<serde_json::Value> = audit(&s)
        .into_iter()
        .filter(|e| e["token"] == "watcher" && e["result"] == "PermissionDenied")
        .collect();
    for call in ["CreateBackup", "CreateRestore", "CancelBackup"] {
        let e = denied.iter().find(|e| e["call"] == call);
        let e = e.unwrap_or_else(|| panic!("no refused {call} in {denied:?}"));
        assert!(
            e["peer"]
                .as_str()
                .unwrap_or_default()
                .ends_with("(console)"),
            "{e}"
        );
    }
}

fn audit(s: &Setup) -> Vec<serde_json::Value> {
    s.c.ferry(&["audit", "list", "--since", "1h", "-o", "json"])
        .expect_code(0)
        .json()["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn another_teams_backup_answers_like_a_missing_one() {
    let s = setup();
    let b_admin = s.token("b-admin", "b", "admin");
    let a_op = s.token("a-op", "a", "operator");
    let data = s.c.path().join("srv/b-shop");
    ferry_archive::sample::generate(&data, 3).unwrap();
    let manifest = s.c.path().join("b-shop.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: secret-shop\ncomponents:\n  - name: web\n    volumes:\n      - {{name: files, path: {}}}\n",
            data.display()
        ),
    )
    .unwrap();
    s.c.ferry_as(
        &b_admin,
        &["app", "apply", "-f", manifest.to_str().unwrap()],
    )
    .expect_code(0);
    let theirs =
        s.c.ferry_as(
            &b_admin,
            &["backup", "create", "secret-shop", "--wait", "-o", "json"],
        )
        .expect_code(0)
        .json()["id"]
            .as_str()
            .expect("an id")
            .to_owned();
    // An id of the same shape that exists nowhere.
    let last = if theirs.ends_with('0') { "1" } else { "0" };
    let missing = format!("{}{last}", &theirs[..theirs.len() - 1]);
    s.rt.block_on(async {
        let bearer = format!("Bearer {a_op}");
        for page in [
            "/backups/{}",
            "/backups/{}/restore",
            "/jobs/{}",
            "/jobs/{}/events",
        ] {
            let headers = [("Authorization", bearer.as_str())];
            let a = s
                .http("GET", &page.replace("{}", &theirs), &headers, "")
                .await;
            let m = s
                .http("GET", &page.replace("{}", &missing), &headers, "")
                .await;
            assert_eq!(a.status, 404, "{page}: {}", a.body);
            assert_eq!(m.status, 404, "{page}: {}", m.body);
            assert_eq!(
                a.body.replace(&theirs, "ID"),
                m.body.replace(&missing, "ID"),
                "{page}"
            );
            // (Job ids start with their app's name: only what was asked for is echoed.)
            assert!(
                !a.body.replace(&theirs, "ID").contains("secret-shop"),
                "{}",
                a.body
            );
        }
        // Their apps are not listed either.
        let overview = s
            .http("GET", "/", &[("Authorization", bearer.as_str())], "")
            .await;
        assert_eq!(overview.status, 200);
        assert!(!overview.body.contains("secret-shop"));

        let b = s.browser().await;
        sign_in(&b, &s, &a_op).await;
        b.open(&s.url(&format!("/backups/{theirs}")), "h1").await;
        assert_eq!(b.text("h1").await, "Not found");
        assert!(
            !b.text("body")
                .await
                .replace(&theirs, "ID")
                .contains("secret-shop")
        );
        b.screenshot("other-team").await;
        b.close().await;

        // The installation's admin token reaches every team: its session picks one.
        let admin = std::fs::read_to_string(s.c.admin_token_file()).unwrap();
        let b = s.browser().await;
        sign_in(&b, &s, admin.trim()).await;
        b.wait_for("#apps").await;
        assert!(!b.text("#apps").await.contains("secret-shop"), "team default first");
        let pick = b.client.find(Locator::Css("#team-pick")).await.expect("a team picker");
        pick.clear().await.unwrap();
        pick.send_keys("b").await.unwrap();
        b.client
            .find(Locator::Css("form[action='/team'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_until(
            "team b's apps",
            "document.querySelector('#apps') && document.querySelector('#apps').textContent.includes('secret-shop')",
            Duration::from_secs(30),
        )
        .await;
        b.open(&s.url(&format!("/backups/{theirs}")), "#backup-facts").await;
        b.close().await;
    });
    // Team B still has it.
    s.c.ferry_as(&b_admin, &["backup", "get", &theirs])
        .expect_code(0);
}

#[test]
fn without_a_token_there_is_only_the_sign_in_form_and_forms_need_their_csrf_token() {
    let s = setup();
    let op = s.token("ops", "default", "operator");
    let id = s.c.backup_completed("shop", &[])["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let before = s.backups();
    s.rt.block_on(async {
        // No token: the sign-in form, and nothing of the team.
        for path in [
            "/",
            "/backups",
            &format!("/backups/{id}"),
            "/workers",
            "/storage",
            "/schedules",
            "/jobs",
        ] {
            let a = s.http("GET", path, &[], "").await;
            assert_eq!(a.status, 401, "{path}");
            assert!(
                a.body.contains("Sign in") && a.body.contains("name=\"token\""),
                "{path}: {}",
                a.body
            );
            // Nothing but the path asked for (kept to return to it after signing in).
            for secret in ["shop", "blog", id.as_str(), "node-1", "Completed"] {
                if path.contains(secret) {
                    continue;
                }
                assert!(
                    !a.body.contains(secret),
                    "{path} shows {secret:?} without a token"
                );
            }
        }
        let events = s.http("GET", &format!("/jobs/{id}/events"), &[], "").await;
        assert_eq!(events.status, 401);
        // A wrong token is no better.
        let wrong = format!("{}0", &op[..op.len() - 1]);
        let wrong = if wrong == op {
            format!("{}1", &op[..op.len() - 1])
        } else {
            wrong
        };
        let a = s
            .http(
                "GET",
                "/",
                &[("Authorization", &format!("Bearer {wrong}"))],
                "",
            )
            .await;
        assert_eq!(a.status, 401);
        assert!(!a.body.contains(&wrong), "the secret is echoed");

        // Scripts may use the token as a bearer token.
        let a = s
            .http(
                "GET",
                "/",
                &[("Authorization", &format!("Bearer {op}"))],
                "",
            )
            .await;
        assert_eq!(a.status, 200);
        assert!(a.body.contains("shop") && a.body.contains("blog"));
        for h in [
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
        ] {
            assert!(!a.header_values(h).is_empty(), "no {h}");
        }

        // Signing in: the form's own CSRF cookie must come back with it.
        let form = s.http("GET", "/signin", &[], "").await;
        let signin_cookie = form.set_cookie("ferry_signin").expect("the sign-in cookie");
        let body = format!("csrf={signin_cookie}&next=%2F&token={op}");
        let refused = s
            .http(
                "POST",
                "/signin",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                &body,
            )
            .await;
        assert_eq!(refused.status, 403, "sign-in without its cookie");
        assert!(refused.set_cookie("ferry_session").is_none());
        let cookie = format!("ferry_signin={signin_cookie}");
        let signed = s
            .http(
                "POST",
                "/signin",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Cookie", &cookie),
                ],
                &body,
            )
            .await;
        assert_eq!(signed.status, 303, "{}", signed.body);
        let session = signed
            .set_cookie("ferry_session")
            .expect("a session cookie");
        let set = signed.header_values("set-cookie").join("\n");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"),
            "{set}"
        );
        assert!(!set.contains(&op), "the token is in a cookie");
        let session = format!("ferry_session={session}");
        let page = s.http("GET", "/", &[("Cookie", &session)], "").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("shop"));
        assert!(!page.body.contains(&op), "the token is rendered");
        let csrf = page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a CSRF token in the page")
            .to_owned();

        // A POST with the session but without its CSRF token (or with another) is refused.
        let form = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", session.as_str()),
        ];
        for body in ["app=shop".to_owned(), "app=shop&csrf=0000".to_owned()] {
            let a = s.http("POST", "/backups", &form, &body).await;
            assert_eq!(a.status, 403, "{body}: {}", a.body);
            assert!(a.body.contains("CSRF"), "{}", a.body);
        }
        // With it, the same POST backs up.
        let a = s
            .http("POST", "/backups", &form, &format!("app=shop&csrf={csrf}"))
            .await;
        assert_eq!(a.status, 303, "{}", a.body);
        assert!(
            a.header_values("location")
                .iter()
                .any(|l| l.starts_with("/jobs/"))
        );
        // Signing out ends the session.
        let out = s
            .http("POST", "/signout", &form, &format!("csrf={csrf}"))
            .await;
        assert_eq!(out.status, 303);
        let after = s.http("GET", "/", &[("Cookie", &session)], "").await;
        assert_eq!(after.status, 401);
    });
    assert_eq!(
        s.backups(),
        before + 1,
        "exactly the POST with its CSRF token backed up"
    );
    let made = audit(&s)
        .into_iter()
        .find(|e| e["token"] == "ops" && e["call"] == "CreateBackup" && e["result"] == "ok")
        .expect("the console's backup in the audit trail");
    assert_eq!(made["target"], "app shop", "{made}");
    assert!(
        made["peer"]
            .as_str()
            .unwrap_or_default()
            .ends_with("(console)"),
        "{made}"
    );
}

#[test]
fn in_place_restores_need_the_apps_name_and_an_admin_and_link_the_safety_backup() {
    let s = setup();
    let op = s.token("ops", "default", "operator");
    let id = s.c.backup_completed("shop", &[])["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let admin = std::fs::read_to_string(s.c.admin_token_file()).unwrap();
    let form = "application/x-www-form-urlencoded";
    let path = format!("/backups/{id}/restore");
    let restore_id = s.rt.block_on(async {
        // An operator is refused by the same decision as `restore create --overwrite`, and is
        // not even offered the form.
        let op_auth = format!("Bearer {op}");
        let headers = [("Authorization", op_auth.as_str()), ("Content-Type", form)];
        let page = s.http("GET", &path, &headers, "").await;
        assert_eq!(page.status, 200);
        assert!(
            !page.body.contains("restore-in-place"),
            "an operator is offered in place"
        );
        let a = s
            .http("POST", &path, &headers, "mode=in-place&confirm=shop")
            .await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.body.contains("admin"), "{}", a.body);
        // An admin must type the app's name.
        let admin_auth = format!("Bearer {}", admin.trim());
        let headers = [
            ("Authorization", admin_auth.as_str()),
            ("Content-Type", form),
        ];
        let page = s.http("GET", &path, &headers, "").await;
        assert!(page.body.contains("restore-in-place"));
        for confirm in ["", "Shop", "blog"] {
            let a = s
                .http(
                    "POST",
                    &path,
                    &headers,
                    &format!("mode=in-place&confirm={confirm}"),
                )
                .await;
            assert_eq!(a.status, 400, "{confirm:?}: {}", a.body);
        }
        let a = s
            .http("POST", &path, &headers, "mode=in-place&confirm=shop")
            .await;
        assert_eq!(a.status, 303, "{}", a.body);
        let location = a.header_values("location")[0].to_owned();
        job_id_of(&location)
    });
    // Exactly one restore, and it completes.
    let mut state = serde_json::Value::Null;
    ferry_integration_tests::wait_for(Duration::from_secs(60), "the in-place restore", || {
        state =
            s.c.ferry(&["restore", "get", &restore_id, "-o", "json"])
                .expect_code(0)
                .json();
        state["state"] == "Completed" || state["state"] == "Failed"
    });
    assert_eq!(state["state"], "Completed", "{state}");
    let safety = state["safety_backup"]
        .as_str()
        .expect("a safety backup")
        .to_owned();
    let restores =
        s.c.ferry(&["restore", "list", "-o", "json"])
            .expect_code(0)
            .json();
    assert_eq!(restores["restores"].as_array().map(Vec::len), Some(1));
    s.rt.block_on(async {
        let admin_auth = format!("Bearer {}", admin.trim());
        let page = s
            .http(
                "GET",
                &format!("/jobs/{restore_id}"),
                &[("Authorization", &admin_auth)],
                "",
            )
            .await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains(&format!("href=\"/backups/{safety}\"")),
            "the result does not link the safety backup {safety}: {}",
            page.body
        );
    });
}
