//! Encryption at rest over real processes (DESIGN §6 "Data at rest"): a location added with
//! `--encrypt-to` holds no plaintext; a worker with only the public key backs up; a restore
//! without an identity fails naming it and writes nothing; a worker with the identity restores
//! bit-exact; the by-hand recovery of the README works with Debian's `age`, `zstd` and `tar`;
//! rotating to a new recipient keeps old backups restorable with the new identity and no longer
//! with the removed one.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_integration_tests::{Cluster, age_key, files, listing};

const MARKER: &str = "FERRY-PLAINTEXT-MARKER-7c1e";

/// Replaces the running worker of cluster `local` by one started with `identity_files`.
fn replace_worker(c: &mut Cluster, node: &str, identity_files: &[&Path]) {
    for w in c.workers.iter_mut() {
        w.stop();
    }
    ferry_integration_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the old worker to leave",
        || c.worker_ids("local").is_empty(),
    );
    let mut args = Vec::new();
    for f in identity_files {
        args.push("--identity-file".to_owned());
        args.push(f.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.add_worker_args("local", node, 2, &[], &args);
}

#[test]
fn an_encrypted_location_holds_no_plaintext_and_restores_only_with_its_identity() {
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    let keys = c.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (id1, r1) = age_key(&keys, "first");
    let (id2, r2) = age_key(&keys, "second");

    // A worker with no identity at all: public keys are enough to back up.
    c.add_worker("local", "n1");
    let storage = c.path().join("vault");
    c.ferry(&[
        "storage",
        "add",
        "vault",
        "--local",
        storage.to_str().unwrap(),
        "--cluster",
        "local",
        "--encrypt-to",
        &r1,
    ])
    .expect_code(0);
    let listed = c
        .ferry(&["storage", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(
        listed["locations"][0]["encrypt_to"][0],
        r1.as_str(),
        "{listed:#}"
    );

    let data = c.path().join("srv/shop/data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), MARKER.repeat(100)).unwrap();
    std::fs::write(
        data.join("sub/b.bin"),
        (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    c.apply(&format!(
        "name: shop\ncomponents:\n  - name: api\n    config: {{note: {MARKER}}}\n    volumes:\n      - {{name: data, path: {}}}\n",
        data.display()
    ))
    .expect_code(0);
    let backup = c.backup_completed("shop", &["--storage", "vault"]);
    let id = backup["id"].as_str().unwrap().to_owned();

    // Nothing in the location reads as plaintext; every archive is an age file.
    let stored = files(&storage);
    let archives: Vec<&PathBuf> = stored
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("shards")))
        .collect();
    assert_eq!(archives.len(), 2, "{stored:?}");
    for p in &stored {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{} holds plaintext",
            p.display()
        );
    }
    for a in &archives {
        assert!(
            a.to_str().unwrap().ends_with(".tar.zst.age"),
            "{}",
            a.display()
        );
        let bytes = std::fs::read(a).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{}",
            a.display()
        );
    }
    let backup_dir = storage.join(format!("teams/default/apps/shop/backups/{id}"));
    assert!(backup_dir.join("key.age").is_file());

    // Verify needs no identity: it hashes what is stored.
    c.ferry(&["backup", "verify", &id]).expect_code(0);

    // A restore on a worker without an identity fails, naming what is missing, writing nothing.
    let copy = c.path().join("srv/copy");
    let failed = c.restore_copy(&id, "copy", &data, &copy, 1).json();
    let text = failed.to_string();
    assert!(text.contains("--identity-file"), "{failed:#}");
    assert!(
        !copy.exists() || listing(&copy).is_empty(),
        "{:?}",
        listing(&copy)
    );

    // By hand, with Debian's age, zstd and tar (as the README shows).
    let volume = archives
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("api.volume")
        })
        .unwrap();
    let by_hand = c.path().join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    let script = format!(
        "set -euo pipefail; age -d -i {id1} {dir}/key.age > {out}/backup.key; \
         mkdir {out}/data; age -d -i {out}/backup.key {archive} | zstd -d | tar -x -C {out}/data",
        id1 = id1.display(),
        dir = backup_dir.display(),
        out = by_hand.display(),
        archive = volume.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing(&by_hand.join("data")), listing(&data));
    assert_eq!(
        std::fs::read(by_hand.join("data/sub/b.bin")).unwrap(),
        std::fs::read(data.join("sub/b.bin")).unwrap()
    );

    // A worker holding the identity restores bit-exact.
    replace_worker(&mut c, "n2", &[&id1]);
    let copy2 = c.path().join("srv/copy2");
    c.restore_copy(&id, "copy2", &data, &copy2, 0);
    assert_eq!(listing(&copy2), listing(&data));
    assert_eq!(
        std::fs::read(copy2.join("a.txt")).unwrap(),
        std::fs::read(data.join("a.txt")).unwrap()
    );
    let restored = c
        .ferry(&["app", "get", "copy2", "-o", "json"])
        .expect_code(0)
        .json();
    assert!(restored.to_string().contains(MARKER), "{restored:#}");

    // Rotation: the location's key moves to the second recipient. The old backup's key file is
    // resealed; its archives are untouched.
    let before: Vec<Vec<u8>> = archives.iter().map(|a| std::fs::read(a).unwrap()).collect();
    let rotated = c
        .ferry(&[
            "storage",
            "rotate-recipients",
            "vault",
            "--encrypt-to",
            &r2,
            "--identity-file",
            id1.to_str().unwrap(),
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(rotated["resealed"], 1, "{rotated:#}");
    let after: Vec<Vec<u8>> = archives.iter().map(|a| std::fs::read(a).unwrap()).collect();
    assert_eq!(before, after, "rotation rewrote an archive");
    // The removed identity no longer opens it, by hand or on a worker.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id1)
        .arg(backup_dir.join("key.age"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let copy3 = c.path().join("srv/copy3");
    let failed = c.restore_copy(&id, "copy3", &data, &copy3, 1).json();
    assert!(failed.to_string().contains("opens key file"), "{failed:#}");
    assert!(!copy3.exists() || listing(&copy3).is_empty());
    // The new one does.
    replace_worker(&mut c, "n3", &[&id2]);
    let copy4 = c.path().join("srv/copy4");
    c.restore_copy(&id, "copy4", &data, &copy4, 0);
    assert_eq!(listing(&copy4), listing(&data));
    assert_eq!(
        std::fs::read(copy4.join("sub/b.bin")).unwrap(),
        std::fs::read(data.join("sub/b.bin")).unwrap()
    );
    // And new backups are sealed to the new recipient only.
    let second = c.backup_completed("shop", &["--storage", "vault"]);
    let second_key = storage.join(format!(
        "teams/default/apps/shop/backups/{}/key.age",
        second["id"].as_str().unwrap()
    ));
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id2)
        .arg(&second_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // In place: the safety backup of the current state goes to the same location, encrypted
    // like every backup there.
    let in_place = c
        .ferry(&[
            "restore",
            "create",
            &id,
            "--overwrite",
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    let safety = in_place["safety_backup"].as_str().unwrap();
    assert!(!safety.is_empty(), "{in_place:#}");
    let safety_dir = storage.join(format!("teams/default/apps/shop/backups/{safety}"));
    assert!(safety_dir.join("key.age").is_file());
    for p in files(&safety_dir) {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{}",
            p.display()
        );
        if p.parent().is_some_and(|d| d.ends_with("shards")) {
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{}",
                p.display()
            );
        }
    }
    assert_eq!(
        std::fs::read(data.join("a.txt")).unwrap(),
        MARKER.repeat(100).as_bytes()
    );

    // Export/import carries it as it is: the archives stay age files, its key file travels
    // with it, and another installation's worker holding the identity restores it.
    let file = c.path().join("shop.ferry");
    c.ferry(&["backup", "export", &id, "-f", file.to_str().unwrap()])
        .expect_code(0);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names[..2], ["manifest.json", "key.age"], "{names:?}");
    let exported = std::fs::read(&file).unwrap();
    assert!(
        !exported
            .windows(MARKER.len())
            .any(|w| w == MARKER.as_bytes())
    );
    let mut b = Cluster::start(&["--no-embedded-worker"]);
    b.add_local_storage("archives", "local");
    b.add_worker_args(
        "local",
        "b1",
        2,
        &[],
        &["--identity-file", id2.to_str().unwrap()],
    );
    b.ferry(&[
        "backup",
        "import",
        file.to_str().unwrap(),
        "--storage",
        "archives",
    ])
    .expect_code(0);
    let copy5 = b.path().join("srv/copy5");
    b.restore_copy(&id, "copy5", &data, &copy5, 0);
    assert_eq!(listing(&copy5), listing(&data));
    assert_eq!(
        std::fs::read(copy5.join("sub/b.bin")).unwrap(),
        std::fs::read(data.join("sub/b.bin")).unwrap()
    );
}

#[test]
fn bad_recipients_are_refused() {
    let c = Cluster::start(&[]);
    let dir = c.path().join("vault");
    let run = c
        .ferry(&[
            "storage",
            "add",
            "vault",
            "--local",
            dir.to_str().unwrap(),
            "--cluster",
            "local",
            "--encrypt-to",
            "age1notakey",
        ])
        .expect_code(2);
    assert!(
        run.stderr.contains("not an age X25519 recipient"),
        "{}",
        run.stderr
    );
    let listed = c
        .ferry(&["storage", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert!(!listed.to_string().contains("vault"), "{listed:#}");
    // Rotation of a location that does not encrypt is refused.
    let (_, r) = age_key(c.path(), "k");
    let run = c
        .ferry(&[
            "storage",
            "rotate-recipients",
            "local",
            "--encrypt-to",
            &r,
            "--identity-file",
            c.path().join("k.key").to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(run.stderr.contains("does not encrypt"), "{}", run.stderr);
}
