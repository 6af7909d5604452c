#!/usr/bin/env bash
# The whole test suite: unit tests, CLI tests on simulated hosts, and the
# real-kernel guest (real mdev sysfs under QEMU TCG). As root on Debian 12 it
# installs what it needs first; set VGPUCTL_SKIP_INSTALL=1 to skip that.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && [ "${VGPUCTL_SKIP_INSTALL:-0}" != 1 ]; then
    scripts/install-test-deps.sh
fi
export VGPUCTL_REAL_KERNEL=1
cargo build --locked --all-targets
# The libvirt helper links libvirt, so it is built on its own (libvirt-helper/).
(cd libvirt-helper && cargo build --locked)
# So does the NVML helper (it loads libnvidia-ml.so.1 at run time).
(cd nvml-helper && cargo build --locked)
# libvirtd on this host, for the tests that define and attach through it.
if [ "$(id -u)" = 0 ] && ! virsh -c qemu:///system version >/dev/null 2>&1; then
    mkdir -p /run/libvirt /var/log/libvirt /var/lib/libvirt/qemu /var/cache/libvirt
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
    for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
fi
# Fast tests first: they say more, sooner, when something is broken.
cargo test --locked --lib --bins
# Integration tests, the real-kernel guest among them (booted once per binary).
cargo test --locked --tests
# Tests that need packages a plain `cargo test` may lack are #[ignore]d with
# the reason; this script installed them, so it runs them.
cargo test --locked --test metrics_prometheus -- --ignored
