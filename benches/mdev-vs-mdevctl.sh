#!/usr/bin/env bash
# Benchmark: vgpuctl vs mdevctl 1.2 on the real mdev core (mbochs) inside the
# real-kernel guest, measured in the same boot. Prints per-operation times
# and the ratios. Needs root and the stack from scripts/install-test-deps.sh.
#
#   benches/mdev-vs-mdevctl.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked >&2
work=${TMPDIR:-/tmp}/vgpuctl-bench-mdev
BENCH_N=${1:-20} VGPUCTL_SCENARIO_DIR=$PWD/tests/real-kernel/bench \
    bash tests/real-kernel/boot.sh "$work" target/x86_64-unknown-linux-gnu/release/vgpuctl
res=$work/out/50-mdev-vs-mdevctl
if [ "$(cat "$res/rc")" != 0 ]; then
    echo "benchmark scenario failed:" >&2
    cat "$res/stderr" >&2
    exit 1
fi
awk '
    { t[$1] = $2 }
    END {
        printf "%-28s %10s\n", "operation (TCG guest)", "ms/op"
        for (k in t) printf "%-28s %10.2f\n", k, t[k] / 1000
        printf "\nratios (mdevctl / vgpuctl; > 1 means vgpuctl is faster)\n"
        printf "  create+remove vs start+stop   %6.2fx\n", t["mdevctl_start_stop"] / t["vgpuctl_create_remove"]
        printf "  list --defined, 100 defined   %6.2fx\n", t["mdevctl_list_defined_100"] / t["vgpuctl_list_defined_100"]
        printf "  list (active)                 %6.2fx\n", t["mdevctl_list_active"] / t["vgpuctl_list_active"]
        printf "  vgpuctl create+remove / raw sysfs create+remove  %6.2fx\n", t["vgpuctl_create_remove"] / t["raw_create_remove"]
    }' "$res/results.txt"
echo "definitions listed: mdevctl $(cat "$res/mdevctl-count.txt"), vgpuctl $(cat "$res/vgpuctl-count.txt")"
