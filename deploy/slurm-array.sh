#!/usr/bin/env bash
# Runs an adsim scenario (or, with --study, a study plan) as a Slurm job array, one shard per
# array task, then merges the shards in a job that starts only when every task succeeded
# (--dependency=afterok).
#
#   deploy/slurm-array.sh SCENARIO SHARDS OUT [adsim run options...]
#   deploy/slurm-array.sh whatsapp-2016 16 results/w2016 --users 1000000000 --replications 1
#   deploy/slurm-array.sh --study uncertainty 8 results/uncertainty
#
# Shards go to OUT.shards/shard-K (with Slurm's logs); the merged results folder is OUT.
# ADSIM names the binary (default: adsim on PATH). With WAIT=1 the script waits for the
# merge job and fails if it did not complete.
set -euo pipefail
command=run
if [ "${1:-}" = --study ]; then
    command=study
    shift
fi
if [ $# -lt 3 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
scenario=$1 shards=$2 out=$3
shift 3
if ! [[ $shards =~ ^[1-9][0-9]*$ ]]; then
    echo "deploy/slurm-array.sh: SHARDS = '$shards': expected a whole number of array tasks, at least 1, such as 16" >&2
    exit 2
fi
adsim=${ADSIM:-adsim}
# ADSIM may be a command of several words (`apptainer exec adsim.sif adsim`): the tasks run it
# split into words, and so does the check below; its first word must be found here.
read -r adsim_program _ <<< "$adsim"
if ! command -v "${adsim_program:-}" >/dev/null 2>&1; then
    echo "deploy/slurm-array.sh: ADSIM = '$adsim': '${adsim_program:-}' not found; set ADSIM to the adsim binary or put adsim on PATH" >&2
    exit 2
fi
if ! command -v sbatch >/dev/null 2>&1; then
    echo "deploy/slurm-array.sh: sbatch not found: this script submits to Slurm" >&2
    exit 2
fi
out=$(realpath -m "$out")
work="$out.shards"
# adsim checks the scenario (or plan), the options and the shard count now, with the options
# the array tasks add, so that a mistake is refused before anything is created or submitted,
# not in every task. The memory check is the compute nodes' to make, not this node's: a
# limit the user gave is kept. (`${check[@]+...}`: an empty array under `set -u` on bash < 4.4.)
check=("$@")
if [ "$command" = run ] && [[ " $* " != *" --memory-limit"* ]]; then
    check+=(--memory-limit 18446744073709551615)
fi
# shellcheck disable=SC2086 # $adsim is split into words, as in the tasks' --wrap
if ! $adsim "$command" "$scenario" --shard "0/$shards" --out "$work/shard-0" --force --quiet \
    --dry-run ${check[@]+"${check[@]}"} >/dev/null; then
    echo "deploy/slurm-array.sh: nothing submitted: adsim refused the $command above" >&2
    exit 2
fi
mkdir -p "$work"
extra=""
[ $# -gt 0 ] && extra=$(printf ' %q' "$@")

array=$(sbatch --parsable --array="0-$((shards - 1))" --job-name=adsim-shard \
    --output="$work/slurm-%A_%a.out" \
    --wrap "$adsim $command $scenario --shard \${SLURM_ARRAY_TASK_ID}/$shards --out $work/shard-\${SLURM_ARRAY_TASK_ID} --force --quiet$extra")
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --job-name=adsim-merge \
    --output="$work/slurm-merge-%j.out" \
    --wrap "$adsim merge $work/shard-* --out $out --force")
echo "submitted array job $array ($shards shards) and merge job $merge"

if [ "${WAIT:-0}" = 1 ]; then
    while squeue -h -j "$array,$merge" 2>/dev/null | grep -q .; do
        sleep 1
    done
    state=$(scontrol show job "$merge" 2>/dev/null | grep -o 'JobState=[A-Z]*' | cut -d= -f2 || true)
    if [ ! -f "$out/cells.parquet" ] && [ ! -f "$out/evaluations.parquet" ]; then
        echo "merge job $merge did not complete (state ${state:-unknown}); logs in $work" >&2
        exit 1
    fi
    echo "merged into $out"
fi
