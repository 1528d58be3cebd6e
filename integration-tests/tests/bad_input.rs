//! Bad input gets a clear message and the exit code of DESIGN.md §4, and changes nothing.

use ferry_integration_tests::{Cluster, ferry_at, free_port};

#[test]
fn bad_input_gives_clear_errors_and_exit_codes() {
    let c = Cluster::start(&[]);
    let cases: &[(&str, &str, &str)] = &[
        (
            "malformed YAML",
            "name: [unclosed\n",
            "invalid app manifest",
        ),
        (
            "unknown field",
            "name: a\ncomponents:\n  - name: c\n    volumez: []\n",
            "unknown field `volumez`",
        ),
        (
            "missing volume path",
            "name: a\ncomponents:\n  - name: c\n    volumes: [{name: v}]\n",
            "missing field `path`",
        ),
        (
            "relative volume path",
            "name: a\ncomponents:\n  - name: c\n    volumes: [{name: v, path: data}]\n",
            "must be absolute",
        ),
        (
            "unknown engine",
            "name: a\ncomponents:\n  - name: c\n    databases: [{name: d, engine: oracle, databases: [x]}]\n",
            "unknown variant `oracle`",
        ),
        ("bad app name", "name: ../etc\n", "invalid app name"),
    ];
    for (what, yaml, expected) in cases {
        let run = c.apply(yaml).expect_code(2);
        assert!(
            run.stderr.contains(expected),
            "{what}: {:?} lacks {expected:?}",
            run.stderr
        );
    }
    // Nothing was registered by any of them.
    let apps = c
        .ferry(&["app", "list", "-o", "json"])
        .expect_code(0)
        .json();
    assert_eq!(apps["apps"].as_array().unwrap().len(), 0);

    let missing = c.path().join("no-such-file.yaml");
    let run = c
        .ferry(&["app", "apply", "-f", missing.to_str().unwrap()])
        .expect_code(2);
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);

    let run = c.ferry(&["app", "get", "nope"]).expect_code(3);
    assert!(
        run.stderr.contains("app \"nope\" not found"),
        "{}",
        run.stderr
    );
    let run = c.ferry(&["backup", "create", "nope"]).expect_code(3);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    let run = c
        .ferry(&["backup", "get", "nope-20260101-000000-abcd"])
        .expect_code(3);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    let run = c
        .ferry(&["restore", "create", "nope-20260101-000000-abcd"])
        .expect_code(3);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    c.ferry(&["backup", "get", "../../etc"]).expect_code(2);
    c.ferry(&["restore", "create", "x-1", "--rewrite", "no-equals-sign"])
        .expect_code(2);
    c.ferry(&["backup", "create"]).expect_code(2);
    c.ferry(&[
        "storage",
        "add",
        "s",
        "--local",
        "/tmp/x",
        "--cluster",
        "bad/name",
    ])
    .expect_code(2);

    // A volume path that does not exist fails the backup (exit 1) with the path in the message.
    c.apply("name: ghost\ncomponents:\n  - name: c\n    volumes: [{name: v, path: /nonexistent/ferry/ghost}]\n")
        .expect_code(0);
    let run = c
        .ferry(&["backup", "create", "ghost", "--wait", "-o", "json"])
        .expect_code(1);
    let job = run.json();
    assert_eq!(job["state"], "Failed");
    assert!(
        job["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/ferry/ghost"),
        "{job:#}"
    );
    // A failed backup is listed as failed, and has no manifest, so it cannot be restored.
    let id = job["id"].as_str().unwrap();
    let run = c.ferry(&["restore", "create", id]).expect_code(2);
    assert!(
        run.stderr.contains("only completed backups"),
        "{}",
        run.stderr
    );

    // A controller nobody runs.
    let run = ferry_at(
        &format!("http://127.0.0.1:{}", free_port()),
        &["app", "list"],
    )
    .expect_code(5);
    assert!(
        run.stderr.contains("cannot reach the controller"),
        "{}",
        run.stderr
    );
}

#[test]
fn completions_and_help_examples() {
    for shell in ["bash", "zsh", "fish"] {
        let run = ferry_at("http://127.0.0.1:1", &["completions", shell]).expect_code(0);
        assert!(
            run.stdout.contains("schedule") && run.stdout.contains("restore"),
            "{shell}"
        );
    }
    ferry_at("http://127.0.0.1:1", &["completions", "tcsh"]).expect_code(2);
    // Every command's help has an example.
    for cmd in [
        vec!["app", "apply"],
        vec!["storage", "add"],
        vec!["backup", "create"],
        vec!["backup", "cancel"],
        vec!["backup", "delete"],
        vec!["restore", "create"],
        vec!["schedule", "create"],
        vec!["worker", "list"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let run = ferry_at("http://127.0.0.1:1", &args).expect_code(0);
        assert!(
            run.stdout.contains("Example"),
            "{cmd:?} --help has no example:\n{}",
            run.stdout
        );
    }
}
