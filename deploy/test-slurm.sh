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
exit $status
