#!/usr/bin/env bash
# Boots the Debian kernel with the vfio-mdev sample drivers under QEMU TCG
# (virtme-ng) and runs every scenario in scenarios/ inside it, as root, against
# the real /sys. Results land in WORK/out/<scenario>/; the Rust test
# tests/real_kernel.rs asserts on them.
#
#   boot.sh WORK VGPUCTL_BINARY [passthrough]
#
# With `passthrough`, the guest gets an emulated IOMMU and spare display
# devices (std VGA as boot display, bochs-display, virtio-gpu) for real
# vfio-pci passthrough tests.
# Exit 3: the stack (vng, kernel, headers, sources) is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$1
bin=$2
mode=${3:-}
extra=()
if [ "$mode" = passthrough ]; then
    extra=(--append intel_iommu=on
        --qemu-opts="-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on -device VGA -device bochs-display -device virtio-gpu-pci")
fi

missing=()
command -v vng >/dev/null || missing+=("vng (pip install virtme-ng)")
command -v qemu-system-x86_64 >/dev/null || missing+=("qemu-system-x86_64 (apt-get install qemu-system-x86)")
[ "$(id -u)" = 0 ] || missing+=("root (modules are installed under /lib/modules)")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'real-kernel stack missing: %s\n' "${missing[@]}" >&2
    exit 3
fi
kver=$("$here/build-modules.sh") || exit 3

rm -rf "$work"
mkdir -p "$work/out"
cp "$bin" "$work/vgpuctl"
# The libvirt helper (dynamically linked; the guest shares our libraries).
helper=${VGPUCTL_LIBVIRT_HELPER:-$here/../../libvirt-helper/target/x86_64-unknown-linux-gnu/debug/vgpuctl-libvirt}
if [ -x "$helper" ]; then cp "$helper" "$work/vgpuctl-libvirt"; fi
# A second vgpuctl to compare against in the same boot (benchmarks only).
if [ -n "${VGPUCTL_BASELINE:-}" ]; then cp "$VGPUCTL_BASELINE" "$work/vgpuctl-baseline"; fi
# The guest does not inherit our environment: pass the knobs through a file.
for var in VGPUCTL_SCENARIOS VGPUCTL_SCENARIO_DIR BENCH_N; do
    if [ -n "${!var:-}" ]; then printf 'export %s=%q\n' "$var" "${!var}"; fi
done >"$work/env.sh"
start=$(date +%s)
# Kernel messages go to the console log (vng's own stderr with them); results
# only through files, since the console can interleave and drop lines.
boot() {
    timeout 900 vng --run "/boot/vmlinuz-$kver" --disable-kvm --memory 2G --cpus 2 \
        --rwdir "$work" --overlay-rwdir /etc --overlay-rwdir /var --overlay-rwdir /run \
        "${extra[@]}" \
        --exec "bash $here/inside.sh $work" >"$work/console.log" 2>&1
}
rc=0
boot || rc=$?
# A guest that dies at once without a single kernel line is the
# infrastructure failing, not the code under test (seen once: vng exit 255):
# retry once, say so, and keep what vng printed.
if [ "$rc" != 0 ] && ! grep -q "Linux version" "$work/console.log" && [ ! -f "$work/out/done" ]; then
    mv "$work/console.log" "$work/console-attempt1.log"
    echo "vng exited $rc before the kernel printed anything (infrastructure flake); retrying once. vng said:" >&2
    cat "$work/console-attempt1.log" >&2
    rc=0
    boot || rc=$?
fi
if [ "$rc" != 0 ]; then
    echo "vng failed (rc=$rc); console log: $work/console.log" >&2
    tail -n 30 "$work/console.log" >&2
    exit 1
fi
echo "guest round trip: $(( $(date +%s) - start )) s" >&2
if [ ! -f "$work/out/done" ]; then
    echo "the guest did not finish its scenarios; console log: $work/console.log" >&2
    tail -n 30 "$work/console.log" >&2
    exit 1
fi
