#!/usr/bin/env bash
# The whole test suite: unit tests, CLI tests on simulated hosts, and the
# real-kernel guest (real mdev sysfs under QEMU TCG). As root on Debian 12 it
# installs what it needs first; set VGPUCTL_SKIP_INSTALL=1 to skip that.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && [ "${VGPUCTL_SKIP_INSTALL:-0}" != 1 ]; then
    scripts/install-test-deps.sh
fi
# The gates the best Rust projects keep: format and lints, for the main crate
# and both helpers, before anything runs.
cargo fmt --check
(cd libvirt-helper && cargo fmt --check)
(cd nvml-helper && cargo fmt --check)
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --all-targets
# The libvirt helper links libvirt, so it is built on its own (libvirt-helper/).
(cd libvirt-helper && cargo clippy --locked --all-targets -- -D warnings && cargo build --locked)
# So does the NVML helper (it loads libnvidia-ml.so.1 at run time).
(cd nvml-helper && cargo clippy --locked --all-targets -- -D warnings && cargo build --locked)
# libvirtd on this host, for the tests that define and attach through it.
if [ "$(id -u)" = 0 ] && ! virsh -c qemu:///system version >/dev/null 2>&1; then
    mkdir -p /run/libvirt /var/log/libvirt /var/lib/libvirt/qemu /var/cache/libvirt
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
    for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
fi
# Fast tests first: they say more, sooner, when something is broken.
cargo test --locked --lib --bins
# Integration tests. Those that need what a plain `cargo test` may lack (the
# real-kernel guests, libvirtd, Ansible, Prometheus) are #[ignore]d with the
# reason; this script installed and started all of it, so it runs them too.
cargo test --locked --tests -- --include-ignored
