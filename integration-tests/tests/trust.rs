//! Signed manifests (DESIGN §6 "Trust") across two installations: a backup imported from an
//! installation this one does not trust restores data only (its exec restore command is
//! neither run nor registered, setuid/setgid bits are cleared); once the other installation's
//! key is trusted it restores in full; a manifest edited after signing (an exec command
//! replaced) is data only even with a trusted key, and the edited command never runs; an edited
//! object key that points at another team's archive is refused.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_integration_tests::{Cluster, listing};
use serde_json::Value;

/// The entries of an export file, in order.
fn read_export(file: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(file).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// A copy of an export file whose manifest went through `edit`.
fn edited_export(from: &Path, to: &Path, edit: impl FnOnce(&mut Value)) {
    let mut entries = read_export(from);
    let mut manifest: Value = serde_json::from_slice(&entries[0].1).unwrap();
    edit(&mut manifest);
    entries[0].1 = serde_json::to_vec_pretty(&manifest).unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(to).unwrap());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn only_trusted_signatures_restore_in_full_and_edited_manifests_never_run_their_commands() {
    let a = Cluster::start(&["--worker-allow-exec", "sh"]);
    let b = Cluster::start(&["--worker-allow-exec", "sh"]);
    let data = a.path().join("srv/shop/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(data.join("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    // Where b's restores put things (the exec restore command writes its marker there).
    let out = b.path().join("srv");
    std::fs::create_dir_all(&out).unwrap();
    let good_marker = out.join("exec-restore-ran");
    let evil_marker = out.join("injected-command-ran");
    a.apply(&format!(
        "name: shop\ncomponents:\n  - name: tool\n    exec: {{backup: [sh, -c, 'echo state'], restore: [sh, -c, 'cat > {}']}}\n  - name: api\n    volumes:\n      - {{name: data, path: {}}}\n",
        good_marker.display(),
        data.display()
    ))
    .expect_code(0);
    let backup = a.backup_completed("shop", &[]);
    assert_eq!(backup["signer"], "this installation", "{backup:#}");
    let id = backup["id"].as_str().unwrap();
    let file = a.path().join("shop.ferry");
    a.ferry(&["backup", "export", id, "-f", file.to_str().unwrap()])
        .expect_code(0);
    let a_key = a
        .ferry(&["trust", "list", "-o", "json"])
        .expect_code(0)
        .json()["own_public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(a_key.starts_with("ed25519:"), "{a_key}");

    // Installation b does not trust a yet: data only.
    let imported = b
        .ferry(&[
            "backup",
            "import",
            file.to_str().unwrap(),
            "--storage",
            "local",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert!(
        imported["signer"]
            .as_str()
            .unwrap()
            .starts_with("untrusted key"),
        "{imported:#}"
    );
    let copy = out.join("copy");
    let restore = b.restore_copy(id, "copy", &data, &copy, 0).json();
    assert_eq!(restore["data_only"], true, "{restore:#}");
    assert!(
        restore["message"].as_str().unwrap().contains("tool.exec"),
        "{restore:#}"
    );
    assert!(
        !good_marker.exists(),
        "an untrusted backup's exec command ran"
    );
    assert_eq!(listing(&copy), listing(&data));
    assert_eq!(
        mode(&copy.join("tool")),
        0o755,
        "setuid kept on a data-only restore"
    );
    let registered = b
        .ferry(&["app", "get", "copy", "-o", "json"])
        .expect_code(0)
        .json();
    assert!(
        !registered.to_string().contains("cat >"),
        "the untrusted exec command was registered: {registered:#}"
    );

    // b trusts a: the same backup restores in full.
    b.ferry(&["trust", "add", "dc-a", "--public-key", &a_key])
        .expect_code(0);
    let copy2 = out.join("copy2");
    let restore = b.restore_copy(id, "copy2", &data, &copy2, 0).json();
    assert_eq!(restore["data_only"], false, "{restore:#}");
    assert_eq!(
        restore["signer"], "trusted installation dc-a",
        "{restore:#}"
    );
    assert_eq!(std::fs::read(&good_marker).unwrap(), b"state\n");
    assert_eq!(mode(&copy2.join("tool")), 0o4755);

    // A manifest edited after signing: its exec restore command replaced. Imported into a third
    // installation that trusts a, it is data only all the same, and the injected command never
    // runs.
    let b = Cluster::start(&["--worker-allow-exec", "sh"]);
    b.ferry(&["trust", "add", "dc-a", "--public-key", &a_key])
        .expect_code(0);
    let edited = a.path().join("edited.ferry");
    let evil = format!("touch {}", evil_marker.display());
    edited_export(&file, &edited, |m| {
        for c in m["app_spec"]["components"].as_array_mut().unwrap() {
            if c["name"] == "tool" {
                c["exec"]["restore"] = serde_json::json!(["sh", "-c", evil]);
            }
        }
    });
    let imported = b
        .ferry(&[
            "backup",
            "import",
            edited.to_str().unwrap(),
            "--storage",
            "local",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert!(
        imported["signer"]
            .as_str()
            .unwrap()
            .starts_with("invalid signature"),
        "{imported:#}"
    );
    let copy3 = out.join("copy3");
    let restore = b
        .ferry(&[
            "restore",
            "create",
            id,
            "--to-app",
            "copy3",
            "--rewrite",
            &format!("{}={}", data.display(), copy3.display()),
            "--wait",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(restore["data_only"], true, "{restore:#}");
    assert!(!evil_marker.exists(), "the injected command ran");
    assert_eq!(listing(&copy3), listing(&data));

    // An object key edited to name another team's archive: refused, nothing imported.
    let foreign = a.path().join("foreign.ferry");
    edited_export(&file, &foreign, |m| {
        m["shards"][0]["object_key"] =
            "teams/other/apps/x/backups/x-1/shards/api.volume.data.1.tar.zst".into();
    });
    let refused = b
        .ferry(&[
            "--team",
            "dev",
            "backup",
            "import",
            foreign.to_str().unwrap(),
            "--storage",
            "local",
        ])
        .expect_code(2);
    assert!(
        refused.stderr.contains("outside the backup's directory"),
        "{}",
        refused.stderr
    );
    let listed = b
        .ferry(&["--team", "dev", "backup", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert!(!listed.to_string().contains(id), "{listed:#}");

    // Trust is admin's: a removal takes effect for the next restore.
    b.ferry(&["trust", "remove", "dc-a"]).expect_code(0);
    let listed = b
        .ferry(&["trust", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(listed["trusted"].as_array().unwrap().len(), 0, "{listed:#}");
}
