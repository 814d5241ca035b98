//! The real binary: bad scenarios fail before any work with a message naming the key, exit
//! non-zero and write nothing; existing files are kept; raw phones warn.

use std::path::Path;

use crate::common::{adsim, stderr};

fn no_files_but(dir: &Path, keep: &[&str]) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(names.is_empty(), "unexpected files left: {names:?}");
}

#[test]
fn bad_scenarios_are_refused_with_the_key_and_write_nothing() {
    let many_segments: String = (0..65)
        .map(|i| format!("[[segment]]\nname = \"s{i}\"\nprevalence = 0.1\ncustomer_if_interested = 0.3\ncustomer_if_not = 0.05\nmessages_if_interested = 0.1\nmessages_if_not = 0.01\nprivacy_shift = 0.0\n\n"))
        .collect();
    // (name, scenario text, fragments the message must contain)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            "[population]\nuserz = 10\n".into(),
            vec!["population", "unknown field `userz`", "users"],
        ),
        (
            "unknown section",
            "[populaton]\nusers = 10\n".into(),
            vec!["unknown field `populaton`"],
        ),
        (
            "wrong type",
            "[population]\nusers = \"many\"\n".into(),
            vec![
                "population.users",
                "invalid type: string \"many\"",
                "line 2",
            ],
        ),
        (
            "negative size",
            "[population]\nusers = -5\n".into(),
            vec!["population.users", "-5"],
        ),
        (
            "zero users",
            "[population]\nusers = 0\n".into(),
            vec!["population.users", "= 0", "from 1"],
        ),
        (
            "heterogeneity out of range",
            "[opt_out]\nheterogeneity = -1.0\n".into(),
            vec!["opt_out.heterogeneity", "-1"],
        ),
        (
            "shares not summing to 1",
            "[data.country_overrides.IN]\nm_share = 0.5\n".into(),
            vec!["country[*].m_share", "summing to 1"],
        ),
        (
            "unknown country",
            "[data.country_overrides.XX]\nm_share = 0.1\n".into(),
            vec!["data.country_overrides.XX", "a country of"],
        ),
        (
            "invalid number block",
            "[data.country_overrides.DE]\nblocks = [\"30/11\"]\n".into(),
            vec![
                "country[5].blocks[0]",
                "\"30/11\"",
                "valid mobile numbers of DE",
            ],
        ),
        (
            "foreign range inside a block",
            "[data.country_overrides.GB]\nblocks = [\"75/10\"]\n".into(),
            vec!["country[9].blocks[0]", "belongs to region JE"],
        ),
        (
            "malformed block",
            "[data.country_overrides.GB]\nblocks = [\"7x/10\"]\n".into(),
            vec!["country[9].blocks[0]", "PREFIX/LEN"],
        ),
        (
            "too many segments",
            "[data]\nsegments = \"many.toml\"\n".into(),
            vec!["many.toml", "65 segments", "1 to 64"],
        ),
        (
            "missing data file",
            "[data]\ncountries = \"nope.toml\"\n".into(),
            vec!["data.countries", "nope.toml", "a readable TOML file"],
        ),
        (
            "rate out of range",
            "[data.segment_overrides.\"Pets\"]\nprevalence = 1.5\n".into(),
            vec!["segment[18].prevalence", "1.5", "[0, 1]"],
        ),
        (
            "not toml",
            "[population\nusers = 1\n".into(),
            vec!["bad.toml", "line 1"],
        ),
        (
            "too small for its blocks",
            "[data.country_overrides.ES]\nblocks = [\"600/9\"]\n[population]\nusers = 200000000\n"
                .into(),
            vec!["country[8].blocks", "room for"],
        ),
    ];
    for (name, text, fragments) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.toml"), &text).unwrap();
        std::fs::write(dir.path().join("many.toml"), &many_segments).unwrap();
        let out = adsim(
            dir.path(),
            &[
                "generate",
                "--scenario",
                "bad.toml",
                "--out",
                "out.parquet",
                "--quiet",
            ],
        );
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: exit {:?}, stderr {err}",
            out.status
        );
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert!(
            err.contains("bad.toml") || err.contains("many.toml") || err.contains("countries.toml"),
            "{name}: no file named in {err}"
        );
        for f in fragments {
            assert!(err.contains(f), "{name}: {f:?} missing from {err}");
        }
        assert!(!err.contains("panicked"), "{name}: {err}");
        no_files_but(dir.path(), &["bad.toml", "many.toml"]);
    }
}

#[test]
fn bad_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for (args, fragment) in [
        (
            vec!["generate", "--users", "0", "--out", "x.parquet"],
            "population.users",
        ),
        (
            vec!["generate", "--users", "-3", "--out", "x.parquet"],
            "-3",
        ),
        (
            vec![
                "generate",
                "--users",
                "10",
                "--replication",
                "5",
                "--out",
                "x.parquet",
            ],
            "--replication = 5",
        ),
        (
            vec![
                "generate",
                "--users",
                "10",
                "--threads",
                "0",
                "--out",
                "x.parquet",
            ],
            "--threads = 0",
        ),
        (
            vec![
                "generate",
                "--users",
                "10",
                "--chunk-size",
                "0",
                "--out",
                "x.parquet",
            ],
            "engine.chunk_size",
        ),
        (
            vec![
                "generate",
                "--scenario",
                "missing.toml",
                "--out",
                "x.parquet",
            ],
            "missing.toml",
        ),
    ] {
        let out = adsim(dir.path(), &args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(fragment),
            "{args:?}: {fragment:?} missing from {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    no_files_but(dir.path(), &[]);
}

#[test]
fn existing_files_are_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.parquet"), b"precious").unwrap();
    let out = adsim(
        dir.path(),
        &["generate", "--users", "100", "--out", "keep.parquet"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already exists: pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(dir.path().join("keep.parquet")).unwrap(),
        b"precious"
    );
    let out = adsim(
        dir.path(),
        &[
            "generate",
            "--users",
            "100",
            "--out",
            "keep.parquet",
            "--force",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(dir.path().join("keep.parquet"))
            .unwrap()
            .starts_with(b"PAR1")
    );
    no_files_but(dir.path(), &["keep.parquet"]);
}

#[test]
fn default_output_is_a_new_file_each_time() {
    let dir = tempfile::tempdir().unwrap();
    for expected in [
        "population-500u-seed2016.parquet",
        "population-500u-seed2016-2.parquet",
    ] {
        let out = adsim(dir.path(), &["generate", "--users", "500"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(expected), "{stdout}");
        assert!(dir.path().join("reports/runs").join(expected).exists());
    }
    let a = std::fs::read(
        dir.path()
            .join("reports/runs/population-500u-seed2016.parquet"),
    )
    .unwrap();
    let b = std::fs::read(
        dir.path()
            .join("reports/runs/population-500u-seed2016-2.parquet"),
    )
    .unwrap();
    assert!(a == b, "two runs of the same command differ");
}

#[test]
fn raw_phones_warn_and_hashes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = adsim(
        dir.path(),
        &[
            "generate",
            "--users",
            "1000",
            "--format",
            "csv",
            "--out",
            "raw.csv",
            "--raw-phones",
        ],
    );
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("warning: --raw-phones"),
        "{}",
        stderr(&out)
    );
    let csv = std::fs::read_to_string(dir.path().join("raw.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.contains("phone_e164") && !header.contains("phone_sha256"),
        "{header}"
    );
    assert!(
        csv.lines().nth(1).unwrap().contains(",+91"),
        "first user is Indian, in E.164"
    );

    let out = adsim(
        dir.path(),
        &[
            "generate",
            "--users",
            "1000",
            "--format",
            "csv",
            "--out",
            "hashed.csv",
        ],
    );
    assert!(out.status.success());
    // Not a terminal: no progress bar, no warning.
    assert_eq!(stderr(&out), "");
    let csv = std::fs::read_to_string(dir.path().join("hashed.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("phone_sha256"));
    assert!(!csv.contains("+91"));
}

#[test]
fn validate_runs_every_case_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = adsim(
        dir.path(),
        &[
            "validate",
            "--users",
            "2000",
            "--replications",
            "2",
            "--out",
            "v",
            "--quiet",
        ],
    );
    // At this size a case may fail by chance (exit 3); the verdicts come from the default size.
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    let v = dir.path().join("v");
    let md = std::fs::read_to_string(v.join("validation.md")).unwrap();
    let known = md.find("## Known misses").expect("known misses section");
    let cases = md.find("## Cases").expect("cases section");
    assert!(known < cases, "known misses head the report");
    assert!(md.contains("`average-ctr`") && md.contains("anchored"));
    let csv = std::fs::read_to_string(v.join("validation.csv")).unwrap();
    assert_eq!(csv.lines().count(), adsim::validate::cases().len() + 1);
    assert!(v.join("validation.html").is_file());
    // Every case's model quantity is defined in docs/model.md section 13.
    let model = include_str!("../../docs/model.md");
    let section = model
        .split("## 13. Validation against published findings")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/model.md has its section 13");
    for c in adsim::validate::cases() {
        assert!(
            section.contains(&format!("`{}`", c.name)),
            "docs/model.md section 13 lacks {}",
            c.name
        );
    }
}
