//! Cluster recipes: the Kubernetes manifest parses and says what it must; the Slurm script
//! submits an array and a dependent merge. (CI runs the Slurm recipe for real on a one-node
//! cluster: deploy/test-slurm.sh.)

use yaml_rust2::YamlLoader;

#[test]
fn kubernetes_manifest_runs_indexed_shards_then_a_merge() {
    let text = include_str!("../../deploy/k8s-indexed-job.yaml");
    let docs = YamlLoader::load_from_str(text).expect("the manifest is valid YAML");
    assert_eq!(docs.len(), 2, "an Indexed Job and a merge Job");
    let shards = &docs[0];
    assert_eq!(shards["kind"].as_str(), Some("Job"));
    assert_eq!(shards["spec"]["completionMode"].as_str(), Some("Indexed"));
    let n = shards["spec"]["completions"].as_i64().expect("completions");
    let container = &shards["spec"]["template"]["spec"]["containers"][0];
    let command = container["args"][0].as_str().expect("shard command");
    assert!(command.contains("adsim run"), "{command}");
    assert!(
        command.contains(&format!("--shard ${{JOB_COMPLETION_INDEX}}/{n}")),
        "shard count must equal completions: {command}"
    );
    assert!(
        command.contains("shard-${JOB_COMPLETION_INDEX}"),
        "{command}"
    );
    assert!(container["volumeMounts"][0]["mountPath"].as_str().is_some());
    let merge = &docs[1];
    assert_eq!(merge["kind"].as_str(), Some("Job"));
    let command = merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .expect("merge command");
    assert!(
        command.contains("adsim merge") && command.contains(&format!("-ge {n}")),
        "{command}"
    );
    let dockerfile = include_str!("../../Dockerfile");
    assert!(
        dockerfile.contains("cargo build --release") && dockerfile.contains("/usr/local/bin/adsim")
    );
}

#[test]
fn slurm_recipe_submits_an_array_and_a_dependent_merge() {
    let script = include_str!("../../deploy/slurm-array.sh");
    for needle in [
        "sbatch --parsable --array=",
        "--shard \\${SLURM_ARRAY_TASK_ID}/$shards",
        "--dependency=\"afterok:$array\"",
        "merge $work/shard-*",
    ] {
        assert!(
            script.contains(needle),
            "deploy/slurm-array.sh lacks {needle}"
        );
    }
}

/// Runs deploy/slurm-array.sh in `dir` with adsim as ADSIM and, first on PATH, a fake `sbatch`
/// that logs its arguments to `dir/sbatch.log` and answers with job id 42.
fn slurm_array(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    slurm_array_with(dir, args, env!("CARGO_BIN_EXE_adsim"))
}

/// As [`slurm_array`], with `adsim` as ADSIM.
fn slurm_array_with(dir: &std::path::Path, args: &[&str], adsim: &str) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("sbatch");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\necho 42\n",
            dir.join("sbatch.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/slurm-array.sh"
        ))
        .args(args)
        .env("ADSIM", adsim)
        .env("PATH", path)
        .env_remove("WAIT")
        .current_dir(dir)
        .output()
        .expect("bash runs")
}

#[test]
fn slurm_recipe_refuses_bad_input_before_it_creates_or_submits_anything() {
    let refused = [
        (
            &["whatsapp-2016", "results", "out"][..],
            "SHARDS = 'results'",
        ),
        (&["whatsapp-2016", "0", "out"][..], "SHARDS = '0'"),
        (&["whatsapp-2016", "-4", "out"][..], "SHARDS = '-4'"),
        (
            &["no-such-scenario", "4", "out"][..],
            "scenario = no-such-scenario",
        ),
        (
            &["whatsapp-2016", "4", "out", "--users", "3"][..],
            "at most as many shards as users (3)",
        ),
        (
            &["whatsapp-2016", "4", "out", "--replications", "zero"][..],
            "--replications",
        ),
        (&["--study", "no-such-plan", "3", "out"][..], "no-such-plan"),
        // The tasks add --out, --force and --quiet themselves: given again, every task would
        // fail, so the check (run with them) refuses it.
        (
            &["whatsapp-2016", "4", "out", "--quiet"][..],
            "'--quiet' cannot be used multiple times",
        ),
        (
            &["--study", "screening", "3", "out", "--out", "x"][..],
            "'--out <OUT>' cannot be used multiple times",
        ),
    ];
    for (args, says) in refused {
        let dir = tempfile::tempdir().unwrap();
        let out = slurm_array(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} should say {says}: {err}");
        assert!(
            !dir.path().join("out.shards").exists(),
            "{args:?} created the shards folder"
        );
        assert!(
            !dir.path().join("sbatch.log").exists(),
            "{args:?} submitted a job"
        );
    }
}

#[test]
fn slurm_recipe_submits_good_input_as_an_array_of_its_shards_and_a_merge() {
    for (args, array, task) in [
        (
            &["whatsapp-2016", "4", "out", "--users", "1000"][..],
            "--array=0-3",
            "run whatsapp-2016 --shard ${SLURM_ARRAY_TASK_ID}/4",
        ),
        (
            &["--study", "screening", "3", "out"][..],
            "--array=0-2",
            "study screening --shard ${SLURM_ARRAY_TASK_ID}/3",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = slurm_array(dir.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(dir.path().join("sbatch.log")).unwrap();
        let calls: Vec<&str> = log.lines().collect();
        assert_eq!(calls.len(), 2, "an array and a merge: {log}");
        assert!(
            calls[0].contains(array) && calls[0].contains(task),
            "{}",
            calls[0]
        );
        assert!(
            calls[1].contains("--dependency=afterok:42") && calls[1].contains(" merge "),
            "{}",
            calls[1]
        );
        assert!(dir.path().join("out.shards").is_dir());
    }
    // ADSIM may be a command of several words (a container's `exec`, say).
    let dir = tempfile::tempdir().unwrap();
    let adsim = format!("env ADSIM_UNUSED=1 {}", env!("CARGO_BIN_EXE_adsim"));
    let out = slurm_array_with(dir.path(), &["whatsapp-2016", "2", "out"], &adsim);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(dir.path().join("sbatch.log")).unwrap();
    assert!(log.contains(&format!("{adsim} run whatsapp-2016")), "{log}");
}
