//! Same scenario and seed, same bytes: for any thread count and chunk size; and any user
//! regenerated from its id equals its row in the bulk output.

use std::fs::File;

use polars::prelude::*;

use crate::common::{adsim, country_codes, population, stderr};

#[test]
fn parquet_bytes_do_not_depend_on_threads_or_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // 2.3M users: three row groups, the last partial; written one at a time (1 thread), or
    // compressed in waves of two (2 threads: a wave of two, then one) or of three.
    let runs = [
        ("1", "1000", "a.parquet"),
        ("2", "77777", "b.parquet"),
        ("3", "5000", "e.parquet"),
        ("3", "1", "c.parquet"),
    ];
    for (threads, chunk, out) in runs {
        let users = if chunk == "1" { "70000" } else { "2300000" };
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
    let e = std::fs::read(dir.path().join("e.parquet")).unwrap();
    assert!(a == e, "1 thread differs from 3 threads");
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
    let known = col("number_known");
    for row in [0usize, 1, 12_345, 99_999, 150_000, 199_999] {
        let id = ids.u64().unwrap().get(row).unwrap();
        let user = pop.user(id);
        assert_eq!(id, row as u64);
        assert_eq!(
            country.str().unwrap().get(row).unwrap(),
            codes[user.country as usize].as_str()
        );
        // The 32-byte digest, whose hex form is the Custom Audience wire format.
        assert_eq!(
            hex::encode(phone.binary().unwrap().get(row).unwrap()),
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
        assert_eq!(
            known.str().unwrap().get(row).unwrap(),
            adsim::population::KnownNumber::LABELS[user.number_known.code()]
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

/// The population of `users` of the default scenario with `edit` applied to its data.
fn edited(
    users: u64,
    edit: impl FnOnce(&mut adsim::data::ReferenceData),
) -> adsim::population::Population {
    let r = crate::common::resolved(users, 2016);
    let mut data = r.data.clone();
    edit(&mut data);
    adsim::population::Population::with(&data, &r.spaces, users, 2016, 0, 1.0).unwrap()
}

/// Common random numbers, factor by factor (docs/model.md §2.1, §16.3): a change of one
/// parameter changes only the draws it governs. Each case edits one parameter and checks, user
/// by user (matched by country and index within it), which fields may differ.
#[test]
fn a_parameter_changes_only_the_draws_it_governs() {
    use adsim::population::{Population, User};
    const USERS: u64 = 60_000;
    let base = edited(USERS, |_| {});
    let codes = country_codes();
    let seg = 3; // a segment in the middle of the table
    let bit = 1u64 << seg;
    // Users of `a` and `b` matched by (country, index within the country).
    let pairs = |a: &Population, b: &Population| -> Vec<(User, User)> {
        let (ra, rb) = (a.country_ranges(), b.country_ranges());
        ra.iter()
            .zip(&rb)
            .flat_map(|(x, y)| {
                let n = (x.end - x.start).min(y.end - y.start);
                (0..n).map(move |k| (a.user(x.start + k), b.user(y.start + k)))
            })
            .collect()
    };
    // One segment's prevalence doubled: only that segment's interest bit moves; the other
    // segments' interests, customers and messaging, and everything else, stay.
    let p = edited(USERS, |d| d.segments.segment[seg].prevalence *= 2.0);
    let mut moved = 0;
    for (a, b) in pairs(&base, &p) {
        assert_eq!(a.interests & !bit, b.interests & !bit, "user {}", a.id);
        moved += usize::from(a.interests & bit != b.interests & bit);
        // A customer or messaging bit moves only where its interest did (it is conditional).
        let same_interest = !(a.interests ^ b.interests);
        assert_eq!(a.customer_of & same_interest, b.customer_of & same_interest);
        assert_eq!(
            a.messages_business & same_interest,
            b.messages_business & same_interest
        );
        assert_eq!(
            (a.age_band, a.s_account, a.number_history),
            (b.age_band, b.s_account, b.number_history)
        );
        assert_eq!(a.phone, b.phone);
        if a.interests == b.interests {
            assert_eq!(a.privacy_score.to_bits(), b.privacy_score.to_bits());
        }
    }
    assert!(
        moved > 300,
        "the doubled prevalence took: {moved} users moved"
    );
    // One segment's customer rate: only that segment's customer bit moves.
    let c = edited(USERS, |d| {
        d.segments.segment[seg].customer_if_interested = 0.9
    });
    for (a, b) in pairs(&base, &c) {
        assert_eq!(a.customer_of & !bit, b.customer_of & !bit);
        assert_eq!(
            (a.interests, a.messages_business),
            (b.interests, b.messages_business)
        );
        assert_eq!(a.privacy_score.to_bits(), b.privacy_score.to_bits());
    }
    // One country's share raised: every other country's users keep their draws (their count
    // shrinks, so the last ones go); who held a number before them is a permutation of the
    // country's users and is redrawn with its size (`s_account`'s sender is not compared).
    let india = codes.iter().position(|c| c == "IN").unwrap();
    let s = edited(USERS, |d| d.countries.country[india].m_share *= 1.5);
    let mut compared = 0;
    for (a, b) in pairs(&base, &s) {
        assert_eq!(a.country, b.country);
        assert_eq!(a.draw, b.draw);
        assert_eq!(
            (
                a.age_band,
                a.interests,
                a.customer_of,
                a.messages_business,
                a.number_history
            ),
            (
                b.age_band,
                b.interests,
                b.customer_of,
                b.messages_business,
                b.number_history
            ),
            "user {} of {}",
            a.id,
            codes[a.country as usize]
        );
        assert_eq!(a.phone, b.phone);
        assert_eq!(a.s_account.exists(), b.s_account.exists());
        assert_eq!(a.privacy_score.to_bits(), b.privacy_score.to_bits());
        compared += usize::from(a.country as usize != india);
    }
    assert!(compared > 20_000, "{compared}");
    // One country's recycling rate: only that country's number histories (and so who holds
    // whose number) move; interests and scores stay everywhere.
    let r = edited(USERS, |d| d.countries.country[india].recycled_rate = 0.3);
    for (a, b) in pairs(&base, &r) {
        assert_eq!(
            (a.age_band, a.interests, a.customer_of),
            (b.age_band, b.interests, b.customer_of)
        );
        assert_eq!(a.privacy_score.to_bits(), b.privacy_score.to_bits());
        if a.country as usize != india {
            assert_eq!(
                (a.number_history, a.s_account),
                (b.number_history, b.s_account)
            );
        }
    }
}
