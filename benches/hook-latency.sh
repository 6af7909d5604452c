#!/usr/bin/env bash
# Benchmark: hook prepare+release latency in the real-kernel guest, vgpuctl
# against a shell-script hook calling mdevctl and against bare process
# starts, all in the same boot. Needs root and the test stack.
#
#   benches/hook-latency.sh [ITERATIONS]
#
# VGPUCTL_BASELINE=/path/to/older/vgpuctl also times that build as the hook,
# in the same boot (e.g. a release build of the previous commit).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked >&2
work=${TMPDIR:-/tmp}/vgpuctl-bench-hook
BENCH_N=${1:-20} VGPUCTL_SCENARIOS=60-hook-latency VGPUCTL_SCENARIO_DIR=$PWD/tests/real-kernel/bench \
    bash tests/real-kernel/boot.sh "$work" target/x86_64-unknown-linux-gnu/release/vgpuctl
res=$work/out/60-hook-latency
if [ "$(cat "$res/rc")" != 0 ]; then
    echo "benchmark scenario failed:" >&2
    cat "$res/stderr" >&2
    exit 1
fi
if grep -q leak "$res/results.txt"; then grep leak "$res/results.txt" >&2; exit 1; fi
awk '
    { t[$1] = $2 }
    END {
        printf "prepare+release per VM start/stop (TCG guest, ms)\n"
        printf "%-10s %10s %14s\n", "domain", "vgpuctl", "script+mdevctl"
        n = split("none one four", d, " ")
        for (i = 1; i <= n; i++) printf "%-10s %10.1f %14.1f   %5.1fx faster\n", d[i], t["vgpuctl_" d[i]]/1000, t["script_" d[i]]/1000, t["script_" d[i]] / t["vgpuctl_" d[i]]
        printf "\nbare process starts (/bin/true twice): %.1f ms\n", t["bin_true_x2"]/1000
        printf "no-GPU hook / bare starts:            %.2fx (goal <= 1.5)\n", t["vgpuctl_none"] / t["bin_true_x2"]
        printf "raw sysfs create+remove of one mdev:  %.1f ms\n", t["raw_sysfs_create_remove"]/1000
        if ("baseline_none" in t) {
            printf "\nthis build against the baseline build (same boot, ms)\n"
            for (i = 1; i <= n; i++) printf "%-10s %10.1f %10.1f   %5.2fx\n", d[i], t["vgpuctl_" d[i]]/1000, t["baseline_" d[i]]/1000, t["vgpuctl_" d[i]] / t["baseline_" d[i]]
        }
    }' "$res/results.txt"
