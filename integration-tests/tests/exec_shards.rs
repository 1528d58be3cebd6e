//! exec shards: a component's own backup command's stdout is the shard, its restore command
//! reads it on stdin; a failing command fails the shard with its stderr tail.

use ferry_integration_tests::Cluster;

#[test]
fn exec_shard_round_trips_through_its_own_commands() {
    let c = Cluster::start(&["--worker-allow-exec", "cat,sh"]);
    let src = c.path().join("realm.json");
    let out = c.path().join("restored/realm.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // Binary-safe: every byte value, several MiB (more than one dump chunk).
    let content: Vec<u8> = (0..(9u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &content).unwrap();
    c.apply(&format!(
        "name: idp\ncomponents:\n  - name: realm\n    exec: {{backup: [cat, {}], restore: [sh, -c, 'cat > {}']}}\n",
        src.display(),
        out.display()
    ))
    .expect_code(0);
    let backup = c
        .ferry(&["backup", "create", "idp", "--wait", "-o", "json"])
        .expect_code(0)
        .json();
    let shard = &backup["shards"][0];
    assert_eq!(shard["kind"], "exec");
    assert_eq!(shard["bytes"].as_u64().unwrap(), content.len() as u64);
    let id = backup["id"].as_str().unwrap();
    c.ferry(&["restore", "create", id, "--wait", "-o", "json"])
        .expect_code(0);
    assert!(
        std::fs::read(&out).unwrap() == content,
        "restored bytes differ"
    );
}

#[test]
fn a_failing_exec_command_fails_the_shard_with_its_stderr() {
    let c = Cluster::start(&["--max-shard-failures", "2", "--worker-allow-exec", "sh"]);
    c.apply("name: broken\ncomponents:\n  - name: tool\n    exec: {backup: [sh, -c, 'echo partial; echo realm export exploded >&2; exit 3'], restore: [cat]}\n")
        .expect_code(0);
    let job = c
        .ferry(&["backup", "create", "broken", "--wait", "-o", "json"])
        .expect_code(1)
        .json();
    assert_eq!(job["state"], "Failed");
    let shard = &job["shards"][0];
    assert_eq!(shard["attempt"], 2, "retried once: {shard:#}");
    let error = shard["error"].as_str().unwrap();
    assert!(
        error.contains("realm export exploded") && error.contains("exit status: 3"),
        "{error}"
    );
    // A failed backup leaves nothing in storage.
    let storage = c
        .path()
        .join("controller-data/storage/teams/default/apps/broken");
    assert!(
        ferry_integration_tests::listing(&storage)
            .iter()
            .all(|p| !p.ends_with(".tar.zst")),
        "{:?}",
        ferry_integration_tests::listing(&storage)
    );
}
