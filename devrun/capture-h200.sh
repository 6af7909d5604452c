#!/usr/bin/env bash
# Read-only capture on a real NVIDIA GPU for replay tests and the metrics
# benchmark: the outputs vgpuctl's fake nvidia-smi / fake NVML helper replay
# (same sections as tests/fixtures/h100-device-run/nvidia-smi-outputs.txt),
# the GPU's sysfs identity, `vgpuctl metrics` through each backend, and
# timings. Never enables MIG, creates instances, changes clocks or resets
# anything; MIG mode, instances and UUIDs are recorded before and after and
# the script fails if they differ.
set -u
B=${VGPUCTL_BIN:-target/x86_64-unknown-linux-gnu/release/vgpuctl}
H=${VGPUCTL_NVML_HELPER:-nvml-helper/target/x86_64-unknown-linux-gnu/release/vgpuctl-nvml}
export VGPUCTL_NVML_HELPER=$H
O=${OUT:-/tmp/devrun}
mkdir -p "$O"
state() { nvidia-smi --query-gpu=pci.bus_id,uuid,mig.mode.current,mig.mode.pending --format=csv,noheader; nvidia-smi mig -lgi 2>&1; }
before=$(state)
sec() { local name=$1; shift; echo "## $name"; "$@" 2>&1; echo "rc=$?"; }
{
    sec smi-lgipp.txt nvidia-smi mig -lgipp
    sec smi-lgip.txt nvidia-smi mig -lgip
    sec smi-lgi.txt nvidia-smi mig -lgi
    sec smi-L.txt nvidia-smi -L
    sec smi-query.txt nvidia-smi --query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending,uuid --format=csv,noheader
    sec smi-util.txt nvidia-smi --query-gpu=pci.bus_id,utilization.gpu,utilization.memory,memory.used,memory.total --format=csv,noheader,nounits
    sec version.txt cat /proc/driver/nvidia/version
    bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | head -n1 | tr 'A-F' 'a-f' | sed 's/^0000//')
    for f in class vendor device subsystem_vendor subsystem_device numa_node; do sec "sysfs-$f.txt" cat "/sys/bus/pci/devices/$bus/$f"; done
} >"$O/nvidia-smi-outputs.txt"
"$H" snapshot --sample-ms 200 >"$O/nvml-snapshot.json" 2>"$O/nvml-snapshot.stderr"
{
    for be in nvml nvidia-smi; do
        for args in "metrics" "list --json" "status --json" "mig status --json"; do
            echo "=== VGPUCTL_NVIDIA_BACKEND=$be vgpuctl $args"
            # shellcheck disable=SC2086
            VGPUCTL_NVIDIA_BACKEND=$be "$B" $args 2>&1
            echo "rc=$?"
        done
    done
    echo "=== timing (ms, 11 runs each; median printed last)"
    med() { sort -n | sed -n 6p; }
    t() { for _ in $(seq 11); do s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e-s)/100000 )); done | med; }
    echo "nvidia-smi query (0.1 ms): $(t nvidia-smi --query-gpu=pci.bus_id,mig.mode.current --format=csv)"
    for be in nvml nvidia-smi; do
        echo "$be list --json (0.1 ms): $(VGPUCTL_NVIDIA_BACKEND=$be t "$B" list --json)"
        echo "$be metrics (0.1 ms): $(VGPUCTL_NVIDIA_BACKEND=$be t "$B" metrics)"
    done
} >"$O/vgpuctl-outputs.txt" 2>&1
after=$(state)
if [ "$before" != "$after" ]; then
    echo "GPU state changed during a read-only run:"; echo "$before"; echo "$after"; exit 1
fi
echo "state unchanged: $before"
