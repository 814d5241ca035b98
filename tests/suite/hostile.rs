//! Hostile folders given back to adsim: `plot`, `compare` and `merge` on folders with a file
//! missing, truncated, foreign or edited by hand, an empty folder, a file where a folder is
//! expected. Each is refused with an error that names the file, a non-zero exit, and nothing
//! written (the folder itself unchanged, no output folder, no temporary left).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::common::{adsim, adsim_ok, stderr};

/// Every file under `dir` with its bytes (a folder's full state).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if dir.is_file() {
        out.insert(dir.to_path_buf(), std::fs::read(dir).unwrap_or_default());
        return out;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates");
    for e in std::fs::read_dir(from).expect("reads").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copies");
    }
}

/// A damage done to a folder, and the text its refusal must contain.
struct Damage {
    name: &'static str,
    apply: fn(&Path, &Path),
    names: &'static str,
}

fn foreign_parquet(path: &Path) {
    let mut df = df!("a" => [1i64, 2, 3]).expect("frame");
    let f = std::fs::File::create(path).expect("creates");
    ParquetWriter::new(f).finish(&mut df).expect("writes");
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).expect("reads");
    std::fs::write(path, &bytes[..bytes.len() / 2]).expect("writes");
}

fn damages() -> Vec<Damage> {
    vec![
        Damage {
            name: "cells.parquet missing",
            apply: |d, _| std::fs::remove_file(d.join("cells.parquet")).expect("removes"),
            names: "cells.parquet",
        },
        Damage {
            name: "timeline_cells.parquet missing",
            apply: |d, _| std::fs::remove_file(d.join("timeline_cells.parquet")).expect("removes"),
            names: "timeline_cells.parquet",
        },
        Damage {
            name: "scenario.toml missing",
            apply: |d, _| std::fs::remove_file(d.join("scenario.toml")).expect("removes"),
            names: "scenario.toml",
        },
        Damage {
            name: "cells.parquet truncated",
            apply: |d, _| truncate(&d.join("cells.parquet")),
            names: "cells.parquet",
        },
        Damage {
            name: "cells.parquet not Parquet",
            apply: |d, _| std::fs::write(d.join("cells.parquet"), "hello").expect("writes"),
            names: "cells.parquet",
        },
        Damage {
            name: "cells.parquet foreign (no adsim metadata)",
            apply: |d, _| foreign_parquet(&d.join("cells.parquet")),
            names: "cells.parquet",
        },
        Damage {
            name: "cells.parquet of another run",
            apply: |d, other| {
                std::fs::copy(other.join("cells.parquet"), d.join("cells.parquet"))
                    .expect("copies");
            },
            names: "scenario.toml",
        },
        Damage {
            name: "cells.parquet of a shard",
            apply: |d, _| {
                let shard = d.parent().expect("parent").join("shard1");
                std::fs::copy(shard.join("cells.parquet"), d.join("cells.parquet"))
                    .expect("copies");
            },
            names: "cells.parquet",
        },
        Damage {
            name: "scenario.toml edited by hand",
            apply: |d, _| {
                let p = d.join("scenario.toml");
                let text = std::fs::read_to_string(&p).expect("reads");
                let edited = text.replace("ctr_relevant = 0.015", "ctr_relevant = 0.03");
                assert_ne!(edited, text, "the edit applies");
                std::fs::write(&p, edited).expect("writes");
            },
            names: "edited after the run",
        },
        Damage {
            name: "scenario.toml not TOML",
            apply: |d, _| std::fs::write(d.join("scenario.toml"), "[[[").expect("writes"),
            names: "scenario.toml",
        },
        Damage {
            name: "empty folder",
            apply: |d, _| {
                std::fs::remove_dir_all(d).expect("removes");
                std::fs::create_dir(d).expect("creates");
            },
            names: "scenario.toml",
        },
        Damage {
            name: "a file where the folder should be",
            apply: |d, _| {
                std::fs::remove_dir_all(d).expect("removes");
                std::fs::write(d, "not a folder").expect("writes");
            },
            names: "not a folder",
        },
    ]
}

/// Runs `args` in `root`, expects a clear refusal naming `names`, and that nothing under
/// `root` changed but what `allowed` says.
fn refused(root: &Path, args: &[&str], names: &str, case: &str) {
    let before = snapshot(root);
    let out = adsim(root, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{case}: {args:?} exit: {err}");
    assert!(err.starts_with("error: "), "{case}: {args:?}: {err}");
    assert!(!err.contains("panicked"), "{case}: {args:?}: {err}");
    assert!(
        err.contains(names),
        "{case}: {args:?}: the error does not name {names}: {err}"
    );
    assert_eq!(
        before,
        snapshot(root),
        "{case}: {args:?} wrote or changed files"
    );
}

#[test]
fn hostile_folders_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let small = ["--users", "300", "--replications", "2", "--quiet"];
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec!["run", "--out", out];
        args.extend(small);
        args.extend(extra);
        adsim_ok(root, &args);
    };
    run("good", &[]);
    run("other", &["--seed", "99"]);
    run("shard0", &["--shard", "0/2"]);
    run("shard1", &["--shard", "1/2"]);
    // The undamaged folders work (the refusals below are the damage's).
    adsim_ok(root, &["compare", "good", "other", "--out", "cmp"]);
    std::fs::remove_dir_all(root.join("cmp")).expect("removes");
    adsim_ok(root, &["merge", "shard0", "shard1", "--out", "merged"]);
    std::fs::remove_dir_all(root.join("merged")).expect("removes");
    adsim_ok(root, &["plot", "good", "--out", "replotted"]);
    std::fs::remove_dir_all(root.join("replotted")).expect("removes");

    let mut checked = 0;
    for d in damages() {
        let bad = root.join("bad");
        let _ = std::fs::remove_dir_all(&bad);
        let _ = std::fs::remove_file(&bad);
        copy_dir(&root.join("good"), &bad);
        (d.apply)(&bad, &root.join("other"));
        refused(root, &["plot", "bad"], d.names, d.name);
        refused(
            root,
            &["plot", "bad", "--out", "replotted"],
            d.names,
            d.name,
        );
        // compare reads the scenario and summary.parquet, not the count tables.
        if !d.name.contains("cells") {
            refused(
                root,
                &["compare", "bad", "good", "--out", "cmp"],
                d.names,
                d.name,
            );
        }
        let _ = std::fs::remove_dir_all(&bad);
        let _ = std::fs::remove_file(&bad);
        copy_dir(&root.join("shard0"), &bad);
        (d.apply)(&bad, &root.join("shard1"));
        let names = if d.name == "cells.parquet of another run" {
            "cells.parquet"
        } else {
            d.names
        };
        refused(
            root,
            &["merge", "bad", "shard1", "--out", "merged"],
            names,
            d.name,
        );
        checked += 1;
    }
    assert_eq!(checked, damages().len());

    // compare needs summary.parquet, which plot rebuilds.
    let bad = root.join("bad");
    let _ = std::fs::remove_dir_all(&bad);
    let _ = std::fs::remove_file(&bad);
    copy_dir(&root.join("good"), &bad);
    std::fs::remove_file(bad.join("summary.parquet")).expect("removes");
    refused(
        root,
        &["compare", "bad", "good", "--out", "cmp"],
        "summary.parquet",
        "summary missing",
    );
    foreign_parquet(&bad.join("summary.parquet"));
    refused(
        root,
        &["compare", "bad", "good", "--out", "cmp"],
        "summary.parquet",
        "summary foreign",
    );
}
