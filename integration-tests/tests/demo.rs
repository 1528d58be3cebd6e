//! `ferry demo` — the README's first command — runs to the end and says so.

use std::process::Command;

#[test]
fn the_demo_completes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ferry_integration_tests::bin_dir().join("ferry"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[6/6] Verifying the copy"), "{stdout}");
    assert!(
        stdout.contains("Demo complete: the restored copy is identical to the original."),
        "{stdout}"
    );
}
