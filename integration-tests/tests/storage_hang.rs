//! A storage location that hangs (its S3 server frozen with SIGSTOP: connections open, nothing
//! answers) while a backup to it is cancelled and its cleanup runs: that work happens off the
//! reconciler's pass, so backups to other locations are handed out and complete as usual.

use std::time::{Duration, Instant};

use ferry_integration_tests::{Cluster, S3Server, big_volume, wait_for};

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started; no memory is involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

#[test]
fn a_hanging_location_does_not_hold_up_other_backups() {
    // First the S3 server: it sets the credential variables every process started later reads.
    let s3 = S3Server::start();
    let mut c = Cluster::start(&["--no-embedded-worker"]);
    c.add_worker_with("dc-a", "node-1", 2, &[]);
    c.add_worker_with("dc-a", "node-2", 2, &[]);
    s3.bucket("hang");
    c.add_s3_storage("offsite", &s3, "hang");
    c.add_local_storage("archives", "dc-a");
    let big = c.path().join("srv/big");
    big_volume(&big, 2, 32);
    c.apply_volume_app("big", "dc-a", ("store", "data"), &big);
    let small = c.path().join("srv/small");
    ferry_archive::sample::generate(&small, 3).unwrap();
    c.apply_volume_app("small", "dc-a", ("web", "files"), &small);

    let pid = s3.pid().expect("the S3 server runs");
    signal(pid, libc::SIGSTOP);
    let stuck = c
        .ferry(&[
            "backup",
            "create",
            "big",
            "--storage",
            "offsite",
            "-o",
            "json",
        ])
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(
        Duration::from_secs(30),
        "the shard to be handed out",
        || {
            c.backup(&stuck)["shards"][0]["attempt"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    c.ferry(&["backup", "cancel", &stuck]).expect_code(0);

    // Meanwhile, backups to the local location run as usual.
    for round in 0..3 {
        let started = Instant::now();
        let run = c
            .ferry(&[
                "backup",
                "create",
                "small",
                "--storage",
                "archives",
                "--wait",
                "-o",
                "json",
            ])
            .expect_code(0)
            .json();
        assert_eq!(run["state"], "Completed", "round {round}: {run:#}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "round {round} took {:?} while another location hung",
            started.elapsed()
        );
    }
    let frozen = c.backup(&stuck);
    assert!(
        frozen["state"] == "Running" || frozen["state"] == "Cancelled",
        "{frozen:#}"
    );

    // Thawed, the cancelled backup ends and leaves nothing.
    signal(pid, libc::SIGCONT);
    let ended = c.ferry(&["backup", "watch", &stuck, "-o", "json"]).json();
    assert_eq!(ended["state"], "Cancelled", "{ended:#}");
    wait_for(Duration::from_secs(60), "no upload left open", || {
        s3.open_uploads("hang").is_empty()
    });
}
