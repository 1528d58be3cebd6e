//! An app with two volumes, backed up by two worker processes and restored into a copy with
//! `--rewrite`; the copy is compared with the original file by file.

use ferry_integration_tests::{Cluster, listing};

#[test]
fn two_volumes_round_trip_into_a_rewritten_copy() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    c.add_worker("dc-a", "node-1");
    c.add_worker("dc-a", "node-2");
    let storage = c.add_local_storage("archives", "dc-a");

    let srv = c.path().join("srv/shop");
    ferry_archive::sample::generate(&srv.join("uploads"), 1).unwrap();
    ferry_archive::sample::generate(&srv.join("media"), 2).unwrap();
    // References made the same way, never touched by Ferry.
    ferry_archive::sample::generate(&c.path().join("ref/uploads"), 1).unwrap();
    ferry_archive::sample::generate(&c.path().join("ref/media"), 2).unwrap();
    let yaml = format!(
        "name: shop\ncluster: dc-a\ncomponents:\n  - name: api\n    config: {{ingress_host: shop.example.com}}\n    volumes:\n      - {{name: uploads, path: {srv}/uploads}}\n  - name: cdn\n    volumes:\n      - {{name: media, path: {srv}/media}}\n",
        srv = srv.display()
    );
    c.apply(&yaml).expect_code(0);

    let backup = c
        .ferry(&["backup", "create", "shop", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(backup["state"], "Completed");
    assert_eq!(backup["app"], "shop");
    let shards = backup["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "two volumes and one config: {backup:#}");
    let workers: std::collections::BTreeSet<_> = shards
        .iter()
        .map(|s| s["worker"].as_str().unwrap().to_owned())
        .collect();
    for s in shards {
        assert_eq!(s["state"], "Succeeded");
        assert_eq!(s["sha256"].as_str().unwrap().len(), 64);
        assert!(s["worker"].as_str().unwrap().starts_with("dc-a-node-"));
    }
    eprintln!("shards ran on {workers:?}");

    // The manifest is in storage, at the layout of DESIGN.md §4, naming every shard.
    let id = backup["id"].as_str().unwrap();
    let manifest_path = storage.join(format!(
        "teams/default/apps/shop/backups/{id}/manifest.json"
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["format"], "ferry.backup");
    assert_eq!(manifest["shards"].as_array().unwrap().len(), 3);
    for s in manifest["shards"].as_array().unwrap() {
        let object = storage.join(s["object_key"].as_str().unwrap());
        assert!(object.is_file(), "{} missing", object.display());
        let key = s["object_key"].as_str().unwrap();
        // Volumes go into the repository (an index), config as a self-contained archive.
        let end = if s["kind"] == "volume" {
            ".idx.zst"
        } else {
            ".tar.zst"
        };
        assert!(key.ends_with(end), "{key}");
    }

    let copy = c.path().join("srv/shop-copy");
    let restore = c
        .ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            "shop-copy",
            "--rewrite",
            &format!("{}={}", srv.display(), copy.display()),
            "--rewrite",
            "shop.example.com=copy.example.com",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restore["state"], "Completed", "{restore:#}");
    for vol in ["uploads", "media"] {
        let diffs =
            ferry_archive::compare_trees(&c.path().join("ref").join(vol), &copy.join(vol)).unwrap();
        assert!(
            diffs.is_empty(),
            "{vol} differs after restore:\n{}",
            diffs.join("\n")
        );
    }
    // The original was not touched by the restore.
    for vol in ["uploads", "media"] {
        let diffs =
            ferry_archive::compare_trees(&c.path().join("ref").join(vol), &srv.join(vol)).unwrap();
        assert!(
            diffs.is_empty(),
            "the source {vol} changed:\n{}",
            diffs.join("\n")
        );
    }
    // The copy is registered with rewritten paths and config.
    let app = c
        .ferry(&["app", "get", "shop-copy", "-o", "json"])
        .expect_code(0)
        .json();
    let spec = &app["spec"];
    assert_eq!(
        spec["components"][0]["volumes"][0]["path"],
        copy.join("uploads").to_str().unwrap()
    );
    assert_eq!(
        spec["components"][0]["config"]["ingress_host"],
        "copy.example.com"
    );

    // Restoring again into the now non-empty copy is refused, and nothing is changed.
    let before = listing(&copy);
    let again = c
        .ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            "shop-copy",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(1)
        .json();
    assert_eq!(again["state"], "Failed");
    let msg = again["message"].as_str().unwrap();
    assert!(
        msg.contains("not empty") && msg.contains("--overwrite"),
        "{msg}"
    );
    assert_eq!(listing(&copy), before);
    for vol in ["uploads", "media"] {
        assert!(
            ferry_archive::compare_trees(&c.path().join("ref").join(vol), &copy.join(vol))
                .unwrap()
                .is_empty()
        );
    }
    let listed = c
        .ferry(&["restore", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(listed["restores"].as_array().unwrap().len(), 2);
}

/// A component's hooks run once around all of its shards: `pre_backup` before any of them
/// (retried with backoff when it fails once), `post_backup` after all of them ended; a component
/// without volumes runs its hooks too. Each hook is a shard of the job, with its output's tail.
#[test]
fn hooks_run_once_around_all_of_a_components_shards() {
    let c = Cluster::start(&["--worker-allow-exec", "sh"]);
    let (a, b) = (c.path().join("srv/app/a"), c.path().join("srv/app/b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f.txt"), b"data").unwrap();
    }
    let marker = c.path().join("failed-once");
    let journal = c.path().join("hooks.log");
    let pre = format!(
        "echo pre >> {j}; test -f {m} || {{ touch {m}; echo 'service refused to stop' >&2; exit 1; }}; echo stopped",
        j = journal.display(),
        m = marker.display()
    );
    let post = format!("echo post >> {}", journal.display());
    let cfg_hook = format!("echo cfg >> {}", journal.display());
    c.apply(&format!(
        "name: app
components:
  - name: web
    hooks: {{pre_backup: [sh, -c, \"{pre}\"], post_backup: [sh, -c, \"{post}\"]}}
    volumes:
      - {{name: a, path: {}}}
      - {{name: b, path: {}}}
  - name: settings
    config: {{x: 1}}
    hooks: {{post_backup: [sh, -c, \"{cfg_hook}\"]}}
",
        a.display(),
        b.display()
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "app", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(backup["state"], "Completed", "{backup:#}");
    let shards = backup["shards"].as_array().unwrap();
    let by_id = |id: &str| {
        shards
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no shard {id}: {backup:#}"))
    };
    let pre_hook = by_id("web.hook.pre_backup");
    assert_eq!(pre_hook["attempt"], 2, "{pre_hook:#}");
    assert_eq!(pre_hook["kind"], "hook");
    let post_hook = by_id("web.hook.post_backup");
    for v in ["web.volume.a", "web.volume.b"] {
        let s = by_id(v);
        assert_eq!(s["attempt"], 1, "{s:#}");
        assert!(
            s["started_at"].as_str() >= pre_hook["finished_at"].as_str(),
            "{s:#}"
        );
        assert!(
            s["finished_at"].as_str() <= post_hook["started_at"].as_str(),
            "{s:#}"
        );
    }
    by_id("settings.hook.post_backup");
    // Once each (the failed first pre attempt retried): no stop/start between the two volumes.
    let log = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.iter().filter(|l| **l == "post").count(), 1, "{log}");
    assert_eq!(lines.iter().filter(|l| **l == "cfg").count(), 1, "{log}");
    assert_eq!(&lines[..2], ["pre", "pre"], "{log}");
    // The hooks are not data: the manifest and a restore know nothing of them.
    let id = backup["id"].as_str().unwrap();
    let copy = c.path().join("srv/copy");
    c.ferry(&[
        "restore",
        "create",
        id,
        "--to-app",
        "copy",
        "--rewrite",
        &format!("{}={}", c.path().join("srv/app").display(), copy.display()),
        "--wait",
    ])
    .expect_code(0);
    assert_eq!(std::fs::read(copy.join("a/f.txt")).unwrap(), b"data");
}

/// What a real server's files carry beyond content — user attributes, access and default ACLs,
/// a file capability, setuid bits, owners by name — survives a backup and a restore into a copy
/// through the CLI, the volume root included; a target host that numbers the owner's user
/// otherwise gets the name's uid, and `--numeric-owner` the archived number.
#[test]
fn extended_attributes_and_owners_by_name_survive_a_restore() {
    let c = Cluster::start(&[]);
    let src = c.path().join("srv/web");
    std::fs::create_dir_all(src.join("shared/team")).unwrap();
    std::fs::write(src.join("httpd"), b"#!/bin/sh\n").unwrap();
    std::fs::write(src.join("shared/team/notes.txt"), b"notes").unwrap();
    let user = ferry_test_support::TempUser::create("vol");
    let old_uid = user.uid();
    std::os::unix::fs::chown(src.join("shared/team/notes.txt"), Some(old_uid), None).unwrap();
    xattr::set(&src, "user.volume", b"the root").unwrap();
    xattr::set(src.join("httpd"), "user.bin", &[0, 159, 255]).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    ferry_test_support::sh("chmod", &["4755", &s(&src.join("httpd"))]);
    ferry_test_support::sh(
        "setcap",
        &["cap_net_bind_service=+ep", &s(&src.join("httpd"))],
    );
    ferry_test_support::sh(
        "setfacl",
        &["-d", "-m", "u:nobody:rwx", &s(&src.join("shared"))],
    );
    ferry_test_support::sh(
        "setfacl",
        &["-m", "u:nobody:r", &s(&src.join("shared/team/notes.txt"))],
    );
    ferry_test_support::sh("setfacl", &["-d", "-m", "g::rx", &s(&src)]);
    c.apply_volume_app("web", "local", ("www", "docroot"), &src);

    let backup = c
        .ferry(&["backup", "create", "web", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let id = backup["id"].as_str().unwrap();

    // The target host knows the owner's name under another uid.
    let new_uid = old_uid + 1000;
    user.renumber(new_uid);
    let restore_into = |copy: &std::path::Path, app: &str, extra: &[&str]| {
        let rewrite = format!("{}={}", src.display(), copy.display());
        let mut args = vec![
            "restore",
            "create",
            id,
            "--to-app",
            app,
            "--rewrite",
            &rewrite,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--wait", "-o", "json"]);
        let restore = c.ferry(&args).expect_code(0).json();
        assert_eq!(restore["state"], "Completed", "{restore:#}");
    };
    let copy = c.path().join("srv/web-copy");
    restore_into(&copy, "web-copy", &[]);
    let diffs = ferry_archive::compare_trees(&src, &copy).unwrap();
    assert!(diffs.is_empty(), "the copy differs:\n{}", diffs.join("\n"));
    let uid =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(p).unwrap());
    assert_eq!(uid(&copy.join("shared/team/notes.txt")), new_uid, "by name");
    assert!(
        ferry_test_support::sh("getcap", &[&s(&copy.join("httpd"))])
            .contains("cap_net_bind_service=ep")
    );

    let numeric = c.path().join("srv/web-numeric");
    restore_into(&numeric, "web-numeric", &["--numeric-owner"]);
    assert_eq!(
        uid(&numeric.join("shared/team/notes.txt")),
        old_uid,
        "--numeric-owner"
    );
}
