//! Same scenario and seed, same bytes: for any thread count and chunk size; and any user
//! regenerated from its id equals its row in the bulk output.

use std::fs::File;

use polars::prelude::*;

use crate::common::{adsim, country_codes, population, stderr};

#[test]
fn parquet_bytes_do_not_depend_on_threads_or_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // 1.2M users: two row groups, the second partial.
    let runs = [
        ("1", "1000", "a.parquet"),
        ("2", "77777", "b.parquet"),
        ("3", "1", "c.parquet"),
    ];
    for (threads, chunk, out) in runs {
        let users = if chunk == "1" { "70000" } else { "1200000" };
        let o = adsim(
            dir.path(),
            &[
                "generate",
                "--users",
                users,
                "--seed",
                "11",
                "--threads",
                threads,
                "--chunk-size",
                chunk,
                "--out",
                out,
                "--quiet",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let a = std::fs::read(dir.path().join("a.parquet")).unwrap();
    let b = std::fs::read(dir.path().join("b.parquet")).unwrap();
    assert!(
        a == b,
        "1 thread x 1000-user chunks differs from 2 threads x 77777"
    );
    // A smaller run at chunk size 1 equals the same size at the default chunk.
    let o = adsim(
        dir.path(),
        &[
            "generate",
            "--users",
            "70000",
            "--seed",
            "11",
            "--threads",
            "2",
            "--out",
            "d.parquet",
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (c, d) = (
        std::fs::read(dir.path().join("c.parquet")).unwrap(),
        std::fs::read(dir.path().join("d.parquet")).unwrap(),
    );
    assert!(c == d, "chunk size 1 differs from the default chunk size");
}

#[test]
fn csv_bytes_do_not_depend_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    for (threads, out) in [("1", "a.csv"), ("2", "b.csv")] {
        let o = adsim(
            dir.path(),
            &[
                "generate",
                "--users",
                "50000",
                "--threads",
                threads,
                "--format",
                "csv",
                "--out",
                out,
                "--quiet",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, b) = (
        std::fs::read(dir.path().join("a.csv")).unwrap(),
        std::fs::read(dir.path().join("b.csv")).unwrap(),
    );
    assert!(a == b, "CSV differs between 1 and 2 threads");
}

#[test]
fn a_user_regenerated_by_id_equals_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let o = adsim(
        dir.path(),
        &[
            "generate",
            "--users",
            "200000",
            "--seed",
            "5",
            "--out",
            "p.parquet",
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let df = ParquetReader::new(File::open(dir.path().join("p.parquet")).unwrap())
        .finish()
        .unwrap();
    assert_eq!(df.height(), 200_000);
    let pop = population(200_000, 5);
    let codes = country_codes();
    let col = |name: &str| df.column(name).unwrap().as_materialized_series().clone();
    let (ids, country, phone, interests, customer, messages, score, account) = (
        col("user_id"),
        col("country"),
        col("phone_sha256"),
        col("interests"),
        col("customer_of"),
        col("messages_business"),
        col("privacy_score"),
        col("s_account"),
    );
    for row in [0usize, 1, 12_345, 99_999, 150_000, 199_999] {
        let id = ids.u64().unwrap().get(row).unwrap();
        let user = pop.user(id);
        assert_eq!(id, row as u64);
        assert_eq!(
            country.str().unwrap().get(row).unwrap(),
            codes[user.country as usize].as_str()
        );
        assert_eq!(
            phone.str().unwrap().get(row).unwrap(),
            user.phone.sha256_hex()
        );
        assert_eq!(interests.u64().unwrap().get(row).unwrap(), user.interests);
        assert_eq!(customer.u64().unwrap().get(row).unwrap(), user.customer_of);
        assert_eq!(
            messages.u64().unwrap().get(row).unwrap(),
            user.messages_business
        );
        assert_eq!(
            score.f64().unwrap().get(row).unwrap().to_bits(),
            user.privacy_score.to_bits()
        );
        assert_eq!(
            account.str().unwrap().get(row).unwrap(),
            user.s_account.label()
        );
    }
}

/// A folder's files: name and bytes.
type Files = Vec<(String, Vec<u8>)>;

/// Every file of a results folder but `run.json`, by name.
fn folder_files(dir: &std::path::Path) -> Files {
    let mut files: Files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "run.json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_determinism_contract_holds_for_threads_and_shard_layouts() {
    // Threads {1, 2, 8} x shards {1, 4, 16}: every file but run.json is identical.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = [
        "--users",
        "20000",
        "--replications",
        "2",
        "--seed",
        "99",
        "--quiet",
    ];
    let mut reference: Option<(String, Files)> = None;
    for threads in ["1", "2", "8"] {
        for shards in [1u32, 4, 16] {
            let out = format!("t{threads}-s{shards}");
            if shards == 1 {
                let mut args = vec!["run", "--threads", threads, "--out", &out];
                args.extend(size);
                crate::common::adsim_ok(d, &args);
            } else {
                let mut parts = Vec::new();
                for k in 0..shards {
                    let part = format!("{out}-part{k}");
                    let shard = format!("{k}/{shards}");
                    let mut args = vec![
                        "run",
                        "--threads",
                        threads,
                        "--shard",
                        &shard,
                        "--out",
                        &part,
                    ];
                    args.extend(size);
                    crate::common::adsim_ok(d, &args);
                    parts.push(part);
                }
                let mut args: Vec<&str> = vec!["merge"];
                args.extend(parts.iter().map(String::as_str));
                args.extend(["--out", &out]);
                crate::common::adsim_ok(d, &args);
            }
            let files = folder_files(&d.join(&out));
            assert!(files.len() > 20, "{out} has {} files", files.len());
            match &reference {
                None => reference = Some((out, files)),
                Some((first, expected)) => {
                    let names =
                        |f: &[(String, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
                    assert_eq!(
                        names(&files),
                        names(expected),
                        "{out} and {first} hold other files"
                    );
                    for ((name, bytes), (_, want)) in files.iter().zip(expected) {
                        assert!(bytes == want, "{name} of {out} differs from {first}'s");
                    }
                }
            }
        }
    }
}
