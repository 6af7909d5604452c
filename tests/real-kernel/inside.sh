#!/usr/bin/env bash
# Runs inside the real-kernel guest as root. Each scenario gets its own
# output folder and its exit code is recorded; one failing scenario does not
# stop the others, so one boot reports everything.
set -u
work=$1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$work/env.sh"
export WORK=$work
# Run the binary from guest memory: the shared work folder is a 9p mount
# without page caching, where every exec would page the binary in over 9p
# (it made each call ~4x slower than a binary on the root file system).
bindir=$(mktemp -d /dev/shm/vgpuctl-bin.XXXXXX)
cp "$work/vgpuctl" "$bindir/vgpuctl"
if [ -f "$work/vgpuctl-libvirt" ]; then cp "$work/vgpuctl-libvirt" "$bindir/vgpuctl-libvirt"; fi
if [ -f "$work/vgpuctl-baseline" ]; then
    cp "$work/vgpuctl-baseline" "$bindir/vgpuctl-baseline"
    export VGPUCTL_BASELINE=$bindir/vgpuctl-baseline
fi
export VGPUCTL=$bindir/vgpuctl
export PATH=$bindir:$PATH
modprobe -a vfio_iommu_type1 mdev mbochs mdpy mtty >"$work/out/modprobe.log" 2>&1
echo $? >"$work/out/modprobe.rc"
for s in "${VGPUCTL_SCENARIO_DIR:-$here/scenarios}"/*.sh; do
    name=$(basename "$s" .sh)
    if [ -n "${VGPUCTL_SCENARIOS:-}" ] && ! grep -qw "$name" <<<"$VGPUCTL_SCENARIOS"; then
        continue
    fi
    out=$work/out/$name
    mkdir -p "$out"
    ( cd "$out" && OUT=$out bash -u "$s" >"$out/stdout" 2>"$out/stderr" )
    echo $? >"$out/rc"
done
touch "$work/out/done"
