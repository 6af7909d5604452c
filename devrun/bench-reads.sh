#!/usr/bin/env bash
# Read-only benchmark on a real NVIDIA GPU: whole-process medians of
# vgpuctl's read commands against one `nvidia-smi --query-gpu` query and
# `nvidia-smi -L`, measured in one run, and how many NVML helper runs each
# command starts (with the --want it asks). A baseline build, when given
# (VGPUCTL_BASELINE_BIN / VGPUCTL_BASELINE_HELPER), is measured in the same
# run, interleaved. Never enables MIG, creates instances, changes clocks or
# resets anything: MIG mode, instances and UUIDs are recorded before and
# after, and the script fails if they differ.
#
#   OUT=/tmp/o RUNS=15 devrun/bench-reads.sh
set -u
B=${VGPUCTL_BIN:-target/x86_64-unknown-linux-gnu/release/vgpuctl}
H=${VGPUCTL_NVML_HELPER:-nvml-helper/target/x86_64-unknown-linux-gnu/release/vgpuctl-nvml}
BASE_B=${VGPUCTL_BASELINE_BIN:-}
BASE_H=${VGPUCTL_BASELINE_HELPER:-}
N=${RUNS:-15}
O=${OUT:-/tmp/devrun}
mkdir -p "$O"
B=$(realpath "$B"); H=$(realpath "$H")
[ -n "$BASE_B" ] && BASE_B=$(realpath "$BASE_B") && BASE_H=$(realpath "$BASE_H")
export VGPUCTL_NVIDIA_BACKEND=auto

state() { nvidia-smi --query-gpu=pci.bus_id,uuid,mig.mode.current,mig.mode.pending --format=csv,noheader; nvidia-smi mig -lgi 2>&1; }
before=$(state)

# A domain with a vGPU for `hook test`, written on a simulated host (the card
# has no vGPU manager; `hook test` plans, as the hook does at prepare).
sim=$(mktemp -d)
"$B" sim create "$sim/h" --profile h100x8-vfio >/dev/null
"$B" --root "$sim/h" sriov enable 0000:18:00.0 >/dev/null
"$B" --root "$sim/h" vm xml --name bench --vgpu H100-20C --domain-type qemu >"$O/domain.xml"
rm -rf "$sim"

# A MIG-backed vGPU type of this card: NVIDIA's type prefix for the board
# (the SXM H200's types are H200X-*), 1 slice, the 1g profile's memory.
# MIG_TYPE names one outright.
board=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
case "$board" in
    "NVIDIA H200") prefix=H200X ;;
    *) prefix=$(echo "$board" | sed 's/^NVIDIA //; s/ .*//') ;;
esac
gb=$(nvidia-smi mig -lgip 2>/dev/null | grep -o 'MIG 1g\.[0-9]*gb ' | head -n1 | sed 's/MIG 1g\.//; s/gb //')
migtype=${MIG_TYPE:-${prefix}-1-${gb:-10}C}

cmds=("list" "status --json" "mig status --json" "types" "explain --type $migtype" "hook test $O/domain.xml")

# Median of N runs in microseconds ($EPOCHREALTIME: no fork in the timing).
med() {
    local xs=()
    for _ in $(seq "$N"); do
        local s=$EPOCHREALTIME
        "$@" >/dev/null 2>&1
        local e=$EPOCHREALTIME
        xs+=($(( (${e/./} - ${s/./}) )))
    done
    printf '%s\n' "${xs[@]}" | sort -n | sed -n "$(( (N + 1) / 2 ))p"
}
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

{
    echo "# $(date -u +%F) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1), $N runs each, medians"
    echo "# vgpuctl: $("$B" --version | head -n1)"
    [ -n "$BASE_B" ] && echo "# baseline: $("$BASE_B" --version | head -n1)"
    # Warm the page cache and the driver once.
    nvidia-smi -L >/dev/null; VGPUCTL_NVML_HELPER=$H "$B" list >/dev/null 2>&1
    t_true=$(med /bin/true)
    t_query=$(med nvidia-smi --query-gpu=pci.bus_id,mig.mode.current --format=csv)
    t_L=$(med nvidia-smi -L)
    echo "/bin/true                      $(ms "$t_true") ms"
    echo "nvidia-smi --query-gpu (mode)  $(ms "$t_query") ms"
    echo "nvidia-smi -L                  $(ms "$t_L") ms"
    # What `status` reads, asked of nvidia-smi: the same utilization query costs it too.
    t_util=$(med nvidia-smi --query-gpu=pci.bus_id,mig.mode.current,utilization.gpu,utilization.memory,memory.used,memory.total --format=csv)
    echo "nvidia-smi --query-gpu (+util) $(ms "$t_util") ms"
    for part in identity profiles instances processes utilization vgpu all; do
        printf 'helper --want %-16s %s ms\n' "$part" "$(ms "$(med "$H" snapshot --want "$part" --sample-ms 0)")"
    done
    # A command that fails is timed on its error path: say so.
    for c in "${cmds[@]}"; do
        # shellcheck disable=SC2086
        VGPUCTL_NVML_HELPER=$H "$B" $c >/dev/null 2>&1 || echo "NOTE: vgpuctl ${c/$O\//} exits $? here (timed on its error path)"
    done
    printf '%-44s %9s %7s %7s' "command" "ms" "/query" "/-L"
    [ -n "$BASE_B" ] && printf ' %12s %7s %7s' "baseline ms" "/query" "new/base"
    echo
    worst=0
    for c in "${cmds[@]}"; do
        # shellcheck disable=SC2086
        t=$(VGPUCTL_NVML_HELPER=$H med "$B" $c)
        r=$(ratio "$t" "$t_query")
        printf '%-44s %9s %7s %7s' "${c/$O\//}" "$(ms "$t")" "$r" "$(ratio "$t" "$t_L")"
        if [ -n "$BASE_B" ]; then
            # shellcheck disable=SC2086
            tb=$(VGPUCTL_NVML_HELPER=$BASE_H med "$BASE_B" $c)
            printf ' %12s %7s %7s' "$(ms "$tb")" "$(ratio "$tb" "$t_query")" "$(ratio "$t" "$tb")"
        fi
        echo
        worst=$(awk -v a="$r" -v w="$worst" 'BEGIN { print (a > w) ? a : w }')
    done
    echo "worst command / one nvidia-smi query: $worst (goal 1.2)"
    # shellcheck disable=SC2086
    t=$(VGPUCTL_NVML_HELPER=$H med "$B" status --json)
    echo "status --json / nvidia-smi query of the same facts (+util): $(ratio "$t" "$t_util")"
    echo "## without the helper (VGPUCTL_NVIDIA_BACKEND=nvidia-smi)"
    for c in "list" "status --json" "mig status --json"; do
        # shellcheck disable=SC2086
        t=$(VGPUCTL_NVIDIA_BACKEND=nvidia-smi med "$B" $c)
        printf '%-44s %9s %7s' "$c" "$(ms "$t")" "$(ratio "$t" "$t_query")"
        if [ -n "$BASE_B" ]; then
            # shellcheck disable=SC2086
            tb=$(VGPUCTL_NVIDIA_BACKEND=nvidia-smi med "$BASE_B" $c)
            printf ' %12s %7s %7s' "$(ms "$tb")" "$(ratio "$tb" "$t_query")" "$(ratio "$t" "$tb")"
        fi
        echo
    done
    echo "## NVML helper runs per command (what each asked for)"
    wrap="$O/helper-wrap.sh"
    printf '#!/bin/sh\necho "$*" >>%s/helper-calls.txt\nexec %s "$@"\n' "$O" "$H" >"$wrap"
    chmod +x "$wrap"
    for c in "${cmds[@]}"; do
        rm -f "$O/helper-calls.txt"
        # shellcheck disable=SC2086
        VGPUCTL_NVML_HELPER=$wrap "$B" $c >/dev/null 2>&1
        touch "$O/helper-calls.txt"
        echo "${c/$O\//}: $(wc -l <"$O/helper-calls.txt") run(s): $(tr '\n' ';' <"$O/helper-calls.txt")"
    done
    rm -f "$wrap" "$O/helper-calls.txt"
    echo "## outputs"
    for c in "list" "mig status --json" "explain --type $migtype"; do
        echo "=== vgpuctl $c"
        # shellcheck disable=SC2086
        VGPUCTL_NVML_HELPER=$H "$B" $c 2>&1
        echo "rc=$?"
    done
} 2>&1 | tee "$O/bench-reads.txt"

after=$(state)
if [ "$before" != "$after" ]; then
    echo "GPU state changed during a read-only run:"; echo "$before"; echo "$after"; exit 1
fi
echo "GPU state unchanged (MIG mode, instances, UUIDs)" | tee -a "$O/bench-reads.txt"
