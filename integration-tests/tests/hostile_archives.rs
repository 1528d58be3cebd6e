//! Archives tampered with in storage (someone with write access to the bucket, checksums in the
//! manifest updated to match): a `..` entry, an absolute path, and a symlink pointing out followed
//! by a file through it. Each restore is refused with a clear error and writes nothing outside
//! its target.

use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_integration_tests::{Cluster, listing};
use sha2::Digest;

/// A tar stream with raw entry names (tar::Builder refuses to write hostile ones).
fn hostile_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if *kind == tar::EntryType::Symlink {
            h.set_size(0);
            h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
        } else {
            h.set_size(data.len() as u64);
        }
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        if *kind != tar::EntryType::Symlink {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Replaces the volume shard's archive and fixes the manifest's checksum to match.
fn tamper(storage: &Path, id: &str, tar: &[u8]) {
    let dir = storage.join(format!("teams/default/apps/shop/backups/{id}"));
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let compressed = zstd::encode_all(tar, 3).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&compressed));
    for shard in manifest["shards"].as_array_mut().unwrap() {
        if shard["kind"] == "volume" {
            let object = storage.join(shard["object_key"].as_str().unwrap());
            std::fs::File::create(&object)
                .unwrap()
                .write_all(&compressed)
                .unwrap();
            shard["sha256"] = sha.clone().into();
        }
    }
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

/// Storage "archives" and the app "shop" with one volume holding `a.txt` ("hello"); returns
/// the storage directory and the volume.
fn shop(c: &Cluster) -> (PathBuf, PathBuf) {
    let storage = c.add_local_storage("archives", "local");
    let data = c.path().join("srv/shop/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    c.apply(&format!(
        "name: shop\ncomponents:\n  - name: api\n    volumes:\n      - {{name: data, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    (storage, data)
}

#[test]
fn hostile_archives_are_refused_and_write_nothing_outside() {
    let c = Cluster::start(&[]);
    let (storage, data) = shop(&c);

    let outside = c.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let abs_target = c.path().join("outside/absolute-evil.txt");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            hostile_tar(&[(
                b"../../outside/dotdot-evil.txt",
                tar::EntryType::Regular,
                b"pwned",
            )]),
        ),
        (
            "absolute",
            hostile_tar(&[(
                abs_target.to_str().unwrap().as_bytes(),
                tar::EntryType::Regular,
                b"pwned",
            )]),
        ),
        (
            "symlink",
            hostile_tar(&[
                (
                    b"link",
                    tar::EntryType::Symlink,
                    outside.to_str().unwrap().as_bytes(),
                ),
                (
                    b"link/through-symlink.txt",
                    tar::EntryType::Regular,
                    b"pwned",
                ),
            ]),
        ),
    ];
    // More file data than the backup recorded (it read the 5 bytes of a.txt).
    let oversized = vec![0u8; 64 << 10];
    let cases: Vec<(&str, Vec<u8>)> = cases
        .into_iter()
        .chain([(
            "oversized",
            hostile_tar(&[(b"big.bin", tar::EntryType::Regular, &oversized)]),
        )])
        .collect();
    let parent_before = listing(c.path().join("srv").as_path());
    for (name, tar) in cases {
        let backup = c
            .ferry(&[
                "backup",
                "create",
                "shop",
                "--storage",
                "archives",
                // Self-contained archives: the test replaces the volume's with hostile ones.
                "--full",
                "--wait",
                "-o",
                "json",
            ])
            .expect_code(0)
            .json();
        let id = backup["id"].as_str().unwrap();
        tamper(&storage, id, &tar);
        let target = c.path().join(format!("srv/copy-{name}"));
        let restore = c
            .ferry(&[
                "restore",
                "create",
                id,
                "--to-app",
                &format!("copy-{name}"),
                "--rewrite",
                &format!("{}={}", data.display(), target.display()),
                "--wait",
                "-o",
                "json",
            ])
            .expect_code(1)
            .json();
        assert_eq!(restore["state"], "Failed", "{name}: {restore:#}");
        let message = restore["message"].as_str().unwrap();
        assert!(
            message.contains("refused") || message.contains("unsafe") || message.contains("escape"),
            "{name}: unclear error: {message}"
        );
        eprintln!("{name}: {message}");
        if name == "oversized" {
            assert!(message.contains("more file data than"), "{message}");
        }
        assert!(
            listing(&outside).is_empty(),
            "{name}: wrote outside: {:?}",
            listing(&outside)
        );
        // Nothing but the (possibly created, empty or partial) target appeared next to the source.
        let now: Vec<_> = listing(c.path().join("srv").as_path())
            .into_iter()
            .filter(|p| !p.starts_with(&format!("copy-{name}")))
            .collect();
        let before: Vec<_> = parent_before
            .iter()
            .filter(|p| !p.starts_with("copy-"))
            .cloned()
            .collect();
        let now: Vec<_> = now
            .into_iter()
            .filter(|p| !p.starts_with("copy-"))
            .collect();
        assert_eq!(now, before, "{name}: something changed beside the target");
        assert_eq!(
            std::fs::read(data.join("a.txt")).unwrap(),
            b"hello",
            "{name}: source touched"
        );
    }
}

/// A manifest edited in the bucket to read another team's archive (or anything outside its own
/// backup) is refused by restore and verify before any shard runs.
#[test]
fn a_manifest_pointing_outside_its_backup_is_refused() {
    let c = Cluster::start(&[]);
    let (storage, data) = shop(&c);
    let backup = c.backup_completed("shop", &["--storage", "archives"]);
    let id = backup["id"].as_str().unwrap();
    let manifest_path = storage.join(format!(
        "teams/default/apps/shop/backups/{id}/manifest.json"
    ));
    let original = std::fs::read(&manifest_path).unwrap();
    for foreign in [
        "teams/other/apps/payroll/backups/payroll-1/shards/db.database.main.1.tar.zst".to_owned(),
        format!("teams/default/apps/shop/backups/{id}/shards/../../../../../other/x.tar.zst"),
    ] {
        let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
        for shard in manifest["shards"].as_array_mut().unwrap() {
            if shard["kind"] == "volume" {
                shard["object_key"] = foreign.clone().into();
            }
        }
        std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let target = c.path().join("srv/copy");
        let restore = c.restore_copy(id, "copy", &data, &target, 2);
        assert!(
            restore.stderr.contains("not in the backup's directory"),
            "{foreign}: {}",
            restore.stderr
        );
        assert!(!target.exists(), "{foreign}: the restore wrote its target");
        let verify = c.ferry(&["backup", "verify", id]).expect_code(2);
        assert!(
            verify.stderr.contains("not in the backup's directory"),
            "{}",
            verify.stderr
        );
    }
}

/// A restore target that is a symbolic link is refused: nothing is written where it points.
#[test]
fn a_restore_target_that_is_a_symlink_is_refused() {
    let c = Cluster::start(&[]);
    let (_, data) = shop(&c);
    let backup = c.backup_completed("shop", &["--storage", "archives"]);
    let id = backup["id"].as_str().unwrap();
    let elsewhere = c.path().join("srv/elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let link = c.path().join("srv/copy");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let restore = c.restore_copy(id, "copy", &data, &link, 1).json();
    assert_eq!(restore["state"], "Failed", "{restore:#}");
    assert!(
        restore["message"]
            .as_str()
            .unwrap()
            .contains("is a symbolic link"),
        "{restore:#}"
    );
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));
}

/// One shard's hostile archive stops the whole restore before anything is written: the other
/// component's exec restore command never runs.
#[test]
fn a_hostile_archive_in_one_shard_stops_every_shard() {
    let c = Cluster::start(&["--worker-allow-exec", "sh"]);
    let storage = c.add_local_storage("archives", "local");
    let data = c.path().join("srv/shop/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let marker = c.path().join("exec-restore-ran");
    c.apply(&format!(
        "name: shop\ncomponents:\n  - name: tool\n    exec: {{backup: [sh, -c, 'echo state'], restore: [sh, -c, 'cat > {}']}}\n  - name: api\n    volumes:\n      - {{name: data, path: {}}}\n",
        marker.display(),
        data.display()
    ))
    .expect_code(0);
    let backup = c.backup_completed("shop", &["--storage", "archives", "--full"]);
    let id = backup["id"].as_str().unwrap();
    tamper(
        &storage,
        id,
        &hostile_tar(&[(b"../escape.txt", tar::EntryType::Regular, b"pwned")]),
    );
    let target = c.path().join("srv/copy");
    let restore = c.restore_copy(id, "copy", &data, &target, 1).json();
    assert_eq!(restore["state"], "Failed", "{restore:#}");
    assert!(!marker.exists(), "the exec restore ran: {restore:#}");
    assert!(!c.path().join("srv/escape.txt").exists());
    assert!(listing(&target).is_empty(), "{:?}", listing(&target));

    // The control: an untampered backup's restore does run the exec command.
    let good = c.backup_completed("shop", &["--storage", "archives"]);
    let good_target = c.path().join("srv/copy2");
    c.restore_copy(
        good["id"].as_str().unwrap(),
        "copy2",
        &data,
        &good_target,
        0,
    );
    assert_eq!(std::fs::read(&marker).unwrap(), b"state\n");
}
