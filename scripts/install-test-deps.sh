#!/usr/bin/env bash
# Installs everything the whole test suite needs on Debian 12, as root:
# libvirt, QEMU, mdevctl, the Debian kernel with headers and sources (for the
# real-kernel guest), virtme-ng, and Prometheus with node_exporter (promtool
# and a real scrape of `vgpuctl metrics`; the tests start their own on loopback). Safe to run again.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: run as root (it uses apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev libxml2-utils \
    mdevctl busybox-static cpio pkg-config kmod make gcc bc flex bison libelf-dev \
    linux-image-amd64 linux-headers-amd64 linux-source-6.1 python3-pip xz-utils \
    prometheus prometheus-node-exporter \
    dpkg-dev binutils lintian rpm man-db systemd openssh-server openssh-client python3-venv
if ! command -v vng >/dev/null; then
    # Debian's system pip refuses to install outside a venv (PEP 668); pyenv's does not.
    python3 -m pip install virtme-ng 2>/dev/null || python3 -m pip install --break-system-packages virtme-ng
fi
command -v vng >/dev/null || { echo "install-test-deps: vng not on PATH after install" >&2; exit 1; }
if ! command -v ansible-playbook >/dev/null; then
    python3 -m pip install ansible-core 2>/dev/null || python3 -m pip install --break-system-packages ansible-core
fi
command -v ansible-playbook >/dev/null || { echo "install-test-deps: ansible-playbook not on PATH after install" >&2; exit 1; }
# Nova's own option definitions read `vgpuctl export --format nova` back
# (tests/nova_export.rs), through oslo.config. In a venv of its own: nova
# pulls in dozens of packages that must not replace the system's.
NOVA_VENV=/opt/vgpuctl-test/nova
if ! "$NOVA_VENV/bin/python" -c "import nova.conf.devices" 2>/dev/null; then
    python3 -m venv "$NOVA_VENV"
    "$NOVA_VENV/bin/python" -m pip install --quiet nova
fi
"$NOVA_VENV/bin/python" -c "import nova.conf.devices" || { echo "install-test-deps: the nova package does not import after install" >&2; exit 1; }
