#!/usr/bin/env bash
# Read-only checks on a real NVIDIA GPU (the device machine). Never enables
# MIG, creates instances, changes clocks or resets anything: only queries.
set -u
B=${VGPUCTL_BIN:-target/x86_64-unknown-linux-gnu/release/vgpuctl}
O=${OUT:-/tmp/devrun}
mkdir -p "$O"
run() { local name=$1; shift; { "$@"; echo "rc=$?"; } >"$O/$name.txt" 2>&1; }
run smi-L nvidia-smi -L
run smi-q nvidia-smi -q
run smi-lgip nvidia-smi mig -lgip
run smi-lgipp nvidia-smi mig -lgipp
run smi-lgi nvidia-smi mig -lgi
run smi-query nvidia-smi --query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending --format=csv,noheader
run version cat /proc/driver/nvidia/version
run vgpuctl-list "$B" list
run vgpuctl-list-json "$B" list --json
run vgpuctl-types "$B" types
run vgpuctl-mig-status "$B" mig status --json
run vgpuctl-mig-profiles "$B" mig profiles --json
run vgpuctl-explain "$B" explain --type H100-10C
run vgpuctl-passthrough-check "$B" passthrough check "$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | head -n1)" --json
run vgpuctl-status "$B" status
run vgpuctl-status-json "$B" status --json
