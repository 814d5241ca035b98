#!/usr/bin/env bash
# Whole-run benchmark: runs the four built-in scenarios at N users (one replication) under
# /usr/bin/time -v and writes reports/bench/<date>/summary.md with users per second, wall
# time, peak memory and the machine.
#
#   tools/bench.sh [N]        # default N = 10000000
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000000}
cargo build --release --quiet
adsim=${CARGO_TARGET_DIR:-target}/release/adsim
day=$(date -u +%Y-%m-%d)
out="reports/bench/$day"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
    echo "# Whole-run benchmark, $day"
    echo
    echo "Machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/Mem:/ {print $2}') GiB memory, $(rustc --version)."
    echo "Command: \`tools/bench.sh $n\`: \`/usr/bin/time -v adsim run SCENARIO --users $n --replications 1 --quiet\`."
    echo
    echo "| scenario | users | wall (s) | simulation (s) | users/s (simulation) | peak RSS (MB) |"
    echo "|---|---|---|---|---|---|"
} > "$out/summary.md"
for s in whatsapp-2016 opt-in whatsapp-2021 eu-pause-2016; do
    /usr/bin/time -v "$adsim" run "$s" --users "$n" --replications 1 --out "$work/$s" --quiet 2> "$work/$s.time"
    wall=$(awk -F': ' '/Elapsed/ {split($2, t, ":"); s = 0; for (i = 1; i <= length(t); i++) s = s * 60 + t[i]; print s}' "$work/$s.time")
    rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$work/$s.time")
    sim=$(sed -n 's/.*"simulate_secs": \([0-9.]*\).*/\1/p' "$work/$s/run.json")
    ups=$(awk -v n="$n" -v s="$sim" 'BEGIN {printf "%.2f M", n / s / 1e6}')
    echo "| $s | $n | $wall | $(printf '%.1f' "$sim") | $ups | $rss |" >> "$out/summary.md"
done
cat "$out/summary.md"
