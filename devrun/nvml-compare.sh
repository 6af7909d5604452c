#!/usr/bin/env bash
# Read-only: the NVML helper's snapshot and vgpuctl's MIG and status views
# through each backend (NVML, nvidia-smi), on a real NVIDIA GPU. Never
# enables MIG, creates instances, changes clocks or resets anything.
set -u
B=${VGPUCTL_BIN:-target/x86_64-unknown-linux-gnu/release/vgpuctl}
H=${VGPUCTL_NVML_HELPER:-nvml-helper/target/x86_64-unknown-linux-gnu/release/vgpuctl-nvml}
export VGPUCTL_NVML_HELPER=$H
O=${OUT:-/tmp/devrun}
mkdir -p "$O"
"$H" snapshot --sample-ms 200 >"$O/nvml-snapshot.json" 2>"$O/nvml-snapshot.stderr"
echo "rc=$?" >>"$O/nvml-snapshot.stderr"
section() { echo "=== $*"; }
{
    for be in nvml nvidia-smi; do
        for args in "mig status --json" "mig profiles --json" "list --json" "status --json"; do
            section "VGPUCTL_NVIDIA_BACKEND=$be vgpuctl $args"
            # shellcheck disable=SC2086
            VGPUCTL_NVIDIA_BACKEND=$be "$B" $args 2>&1
            echo "rc=$?"
        done
    done
    section "nvidia-smi mig -lgip"; nvidia-smi mig -lgip; echo "rc=$?"
    section "nvidia-smi mig -lgipp"; nvidia-smi mig -lgipp; echo "rc=$?"
    section "nvidia-smi -q -d PIDS"; nvidia-smi -q -d PIDS; echo "rc=$?"
    section "nvidia-smi --query-gpu"; nvidia-smi --query-gpu=pci.bus_id,uuid,name,mig.mode.current,mig.mode.pending --format=csv,noheader; echo "rc=$?"
    section "timing (ms): helper snapshot x5, nvidia-smi query x5"
    for _ in 1 2 3 4 5; do s=$(date +%s%N); "$H" snapshot --sample-ms 0 >/dev/null; e=$(date +%s%N); echo "helper $(( (e-s)/1000000 ))"; done
    for _ in 1 2 3 4 5; do s=$(date +%s%N); nvidia-smi --query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending,uuid --format=csv,noheader >/dev/null; e=$(date +%s%N); echo "smi $(( (e-s)/1000000 ))"; done
    for be in nvml nvidia-smi; do for _ in 1 2 3; do s=$(date +%s%N); VGPUCTL_NVIDIA_BACKEND=$be "$B" mig status --json >/dev/null 2>&1; e=$(date +%s%N); echo "vgpuctl mig status ($be) $(( (e-s)/1000000 ))"; done; done
} >"$O/compare.txt" 2>&1
echo done
