//! Shards and merge (docs/model.md §12): separate processes, identical bytes, refusals.

use std::process::Command;
use std::time::Duration;

use crate::common::{adsim, adsim_ok, stderr};

fn ok(dir: &std::path::Path, args: &[&str]) {
    adsim_ok(dir, args);
}

#[test]
fn four_shard_processes_merge_into_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let common = ["--users", "40000", "--replications", "2", "--quiet"];
    // The four shards run as concurrent processes.
    let children: Vec<_> = (0..4)
        .map(|k| {
            let mut args = vec![
                "run".to_string(),
                "--shard".into(),
                format!("{k}/4"),
                "--out".into(),
                format!("s{k}"),
            ];
            args.extend(common.iter().map(|s| s.to_string()));
            Command::new(env!("CARGO_BIN_EXE_adsim"))
                .args(&args)
                .current_dir(d)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    // A shard killed midway leaves no folder that looks complete; run again, it is the same.
    let mut victim = Command::new(env!("CARGO_BIN_EXE_adsim"))
        .args([
            "run",
            "--shard",
            "2/4",
            "--out",
            "s2-again",
            "--users",
            "40000",
            "--replications",
            "2",
            "--quiet",
        ])
        .current_dir(d)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let _ = victim.kill();
    let _ = victim.wait();
    let again = d.join("s2-again");
    assert!(
        !again.exists() || again.join("shard.json").exists(),
        "a killed shard left a partial folder"
    );
    ok(
        d,
        &[
            "run",
            "--shard",
            "2/4",
            "--out",
            "s2-again",
            "--force",
            "--users",
            "40000",
            "--replications",
            "2",
            "--quiet",
        ],
    );
    ok(
        d,
        &["merge", "s3", "s1", "s2-again", "s0", "--out", "merged"],
    );
    let mut single = vec!["run", "--out", "single"];
    single.extend(common);
    ok(d, &single);
    for f in [
        "cells.parquet",
        "timeline_cells.parquet",
        "summary.csv",
        "summary.json",
        "report.md",
        "relevance_vs_rate.png",
    ] {
        let (a, b) = (
            std::fs::read(d.join("merged").join(f)).unwrap(),
            std::fs::read(d.join("single").join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{f} of the merged shards differs from the single run"
        );
    }
    assert_eq!(
        std::fs::read(d.join("s2/cells.parquet")).unwrap(),
        std::fs::read(d.join("s2-again/cells.parquet")).unwrap()
    );

    // Refusals: missing, duplicate, foreign; and no folder written.
    ok(
        d,
        &[
            "run",
            "--shard",
            "3/4",
            "--seed",
            "99",
            "--out",
            "foreign",
            "--users",
            "40000",
            "--replications",
            "2",
            "--quiet",
        ],
    );
    for (args, fragment) in [
        (
            vec!["merge", "s0", "s1", "s2", "--out", "bad"],
            "missing: 3/4",
        ),
        (
            vec!["merge", "s0", "s1", "s2", "s2-again", "s3", "--out", "bad"],
            "shard 2 is also",
        ),
        (
            vec!["merge", "s0", "s1", "s2", "foreign", "--out", "bad"],
            "foreign",
        ),
        (vec!["merge", "s0", "single", "--out", "bad"], "single"),
    ] {
        let out = adsim(d, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(fragment),
            "{args:?}: {fragment:?} missing from {err}"
        );
        assert!(!d.join("bad").exists());
    }
}
