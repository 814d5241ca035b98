#!/usr/bin/env bash
# The shard/merge contract on a real scheduler: starts the one-node Slurm cluster, runs a small
# scenario through deploy/slurm-array.sh, and checks that the merged folder equals a
# single-machine run (every file but run.json). Used by .ci/run; needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
adsim=${ADSIM:-${CARGO_TARGET_DIR:-$(pwd)/target}/release/adsim}
bash deploy/slurm-local.sh
work=$(mktemp -d /tmp/adsim-slurm.XXXXXX)
trap 'rm -rf "$work"' EXIT
args=(--users 30000 --replications 2 --seed 11)
WAIT=1 ADSIM="$adsim" bash deploy/slurm-array.sh whatsapp-2016 4 "$work/merged" "${args[@]}"
"$adsim" run whatsapp-2016 "${args[@]}" --out "$work/single" --quiet
status=0
for f in "$work/single"/*; do
    name=$(basename "$f")
    [ "$name" = run.json ] && continue
    if ! cmp -s "$f" "$work/merged/$name"; then
        echo "slurm: $name of the merged shards differs from the single run" >&2
        status=1
    fi
done
[ $status = 0 ] && echo "slurm: 4 array tasks merged into a folder identical to the single run"

# A study the same way: three array tasks of evaluations, merged, equal to one machine's study.
cat > "$work/plan.toml" <<'PLAN'
name = "slurm-study"
scenario = "whatsapp-2016"
users = 5000
replications = 1
design = "lhs"
samples = 12
[[factor]]
key = "targeting.m_recall"
low = 0.5
high = 0.95
PLAN
WAIT=1 ADSIM="$adsim" bash deploy/slurm-array.sh --study "$work/plan.toml" 3 "$work/study-merged"
"$adsim" study "$work/plan.toml" --out "$work/study-single" --quiet
for f in "$work/study-single"/*; do
    name=$(basename "$f")
    if ! cmp -s "$f" "$work/study-merged/$name"; then
        echo "slurm: $name of the merged study shards differs from the single study" >&2
        status=1
    fi
done
[ $status = 0 ] && echo "slurm: 3 array tasks of a study merged into a folder identical to the single study"
exit $status
