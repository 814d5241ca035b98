//! Faults while writing: a full disk, a file-size limit, SIGINT and SIGTERM during a run, two
//! runs writing the same folder at once, a read-only location. Each ends in a clear error and
//! a non-zero exit (or one clean winner), with no half-written folder and no temporary left.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{adsim_ok, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_adsim");

/// Entries of `dir` (names), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts a clean failure: exit 1, one `error:` message without a panic, naming `names`.
fn failed_cleanly(out: &Output, names: &[&str], case: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{case}: {err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{case}: {err}"
    );
    for n in names {
        assert!(
            err.contains(n),
            "{case}: the error does not say {n:?}: {err}"
        );
    }
}

/// A tmpfs of `size` mounted at `dir` with `options`, unmounted when dropped; `None` where
/// this machine does not allow mounting (not root, or no CAP_SYS_ADMIN).
struct Mount(PathBuf);

impl Mount {
    fn new(dir: &Path, options: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // A file-size limit works on any machine: writes past it fail with EFBIG (SIGXFSZ
    // ignored, as the shell passes it on). 256 KiB stops the count tables.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 256; exec {BIN} run --users 20000 --replications 1 --quiet --out limited"
        ))
        .current_dir(tmp.path())
        .output()
        .expect("bash runs");
    failed_cleanly(
        &out,
        &["File too large", ".limited.tmp-"],
        "file-size limit",
    );
    assert!(
        entries(tmp.path()).is_empty(),
        "left: {:?}",
        entries(tmp.path())
    );

    // A real full disk where this machine lets the test mount a small tmpfs.
    let disk = tmp.path().join("disk");
    if let Some(_mount) = Mount::new(&disk, "size=1m") {
        let out = Command::new(BIN)
            .args(["run", "--users", "20000", "--replications", "1", "--quiet"])
            .arg("--out")
            .arg(disk.join("run"))
            .output()
            .expect("adsim runs");
        failed_cleanly(&out, &["No space left on device"], "full tmpfs");
        assert!(entries(&disk).is_empty(), "left: {:?}", entries(&disk));
    } else {
        eprintln!(
            "note: cannot mount a tmpfs here; the full disk is tested by the file-size limit only"
        );
    }
}

/// Starts a run of a few seconds into `dir/out`, waits until its temporary folder holds a
/// file, sends `signal`, and returns its output.
fn interrupted(dir: &Path, signal: &str) -> Output {
    let child = Command::new(BIN)
        .args([
            "run",
            "--users",
            "3000000",
            "--replications",
            "3",
            "--quiet",
            "--out",
            "out",
        ])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("adsim starts");
    let tmp = dir.join(format!(".out.tmp-{}", child.id()));
    let start = Instant::now();
    while entries(&tmp).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    child.wait_with_output().expect("adsim ends")
}

#[test]
fn sigint_and_sigterm_remove_the_unfinished_folder() {
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let tmp = tempfile::tempdir().expect("temp dir");
        let out = interrupted(tmp.path(), signal);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {err}");
        assert!(
            err.contains(&format!("interrupted by SIG{signal}"))
                && err.contains("removed the unfinished"),
            "SIG{signal}: {err}"
        );
        assert!(
            entries(tmp.path()).is_empty(),
            "SIG{signal} left {:?}",
            entries(tmp.path())
        );
    }
}

#[test]
fn two_runs_into_one_folder_one_wins_and_neither_corrupts() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let spawn = |seed: &str, force: bool| {
        let mut args = vec![
            "run",
            "--users",
            "200000",
            "--replications",
            "1",
            "--quiet",
            "--out",
            "same",
            "--seed",
            seed,
        ];
        if force {
            args.push("--force");
        }
        Command::new(BIN)
            .args(&args)
            .current_dir(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("adsim starts")
    };
    // Without --force: exactly one wins; the other fails with "already exists".
    let (a, b) = (spawn("1", false), spawn("2", false));
    let (a, b) = (
        a.wait_with_output().expect("ends"),
        b.wait_with_output().expect("ends"),
    );
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "{} / {}", stderr(&a), stderr(&b));
    let loser = if a.status.success() { &b } else { &a };
    failed_cleanly(loser, &["already exists", "--force"], "second run");
    assert_eq!(entries(tmp.path()), vec!["same".to_string()]);
    let winner = if a.status.success() { "1" } else { "2" };
    let folder = tmp.path().join("same");
    let text = std::fs::read_to_string(folder.join("scenario.toml")).expect("reads");
    assert!(
        text.contains(&format!("seed = {winner}\n")),
        "the winner's scenario"
    );
    crate::fuzz::runner::check_folder(&folder, 200_000, 1).expect("the folder is whole");

    // With --force both may finish; the folder is one run's, whole, and nothing is left over.
    let (a, b) = (spawn("3", true), spawn("4", true));
    let (a, b) = (
        a.wait_with_output().expect("ends"),
        b.wait_with_output().expect("ends"),
    );
    for o in [&a, &b] {
        if !o.status.success() {
            failed_cleanly(o, &["same"], "forced run");
        }
    }
    assert!(a.status.success() || b.status.success());
    assert_eq!(entries(tmp.path()), vec!["same".to_string()]);
    crate::fuzz::runner::check_folder(&folder, 200_000, 1).expect("the folder is whole");
}

#[test]
fn a_read_only_location_fails_cleanly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("ro");
    std::fs::create_dir(&dir).expect("creates");
    // Root ignores permissions: a read-only tmpfs where mounting is allowed, else /sys (read
    // only to everyone), else the folder's permissions (effective for other users).
    let mount = Mount::new(&dir, "ro,size=1m");
    let target = if mount.is_some() {
        dir.join("out")
    } else if Path::new("/sys/kernel").is_dir() && is_root() {
        PathBuf::from("/sys/adsim-test-out")
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        dir.join("out")
    };
    let out = Command::new(BIN)
        .args([
            "run",
            "--users",
            "1000",
            "--replications",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(&target)
        .output()
        .expect("adsim runs");
    failed_cleanly(&out, &["out.tmp-"], "read-only location");
    assert!(!target.exists());
    // The other writers too: compare and generate.
    let good = tmp.path().join("good");
    adsim_ok(
        tmp.path(),
        &[
            "run",
            "--users",
            "300",
            "--replications",
            "1",
            "--quiet",
            "--out",
            "good",
        ],
    );
    let out = Command::new(BIN)
        .arg("compare")
        .arg(&good)
        .arg("--out")
        .arg(&target)
        .output()
        .expect("adsim runs");
    failed_cleanly(&out, &["out"], "compare into a read-only location");
    let out = Command::new(BIN)
        .args(["generate", "--users", "1000", "--quiet", "--out"])
        .arg(target.with_extension("parquet"))
        .output()
        .expect("adsim runs");
    failed_cleanly(&out, &["out"], "generate into a read-only location");
    drop(mount);
}

/// Whether the tests run as root (who may write where permissions say not).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
