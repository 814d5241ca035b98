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
