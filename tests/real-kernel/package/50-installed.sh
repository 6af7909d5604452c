# The installed Debian package inside the real-kernel guest, from its files
# only (nothing from target/ on PATH): libvirtd fires the packaged hook
# (/etc/libvirt/hooks/qemu.d/vgpuctl -> /usr/bin/vgpuctl), a VM defined
# through the packaged libvirt helper starts with its mdev made by the hook,
# destroy frees it; the installed binary uninstalls and reinstalls its hook,
# and a restarted libvirtd runs the reinstalled one.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VGPUCTL VGPUCTL_LIBVIRT_HELPER VGPUCTL_NVML_HELPER
rec() { echo "$1=$2" >>facts.txt; }
: >facts.txt
hook=/etc/libvirt/hooks/qemu.d/vgpuctl
# libvirt prints the metadata back with double quotes.
meta_uuid() { sed -n "s/.*vgpuctl:mdev .*uuid=[\"']\([^\"']*\)[\"'].*/\1/p" | head -n1; }
wait_gone() { for _ in $(seq 100); do [ -e "/sys/bus/mdev/devices/$1" ] || return 0; sleep 0.1; done; return 1; }
start_libvirtd() {
    libvirtd -d
    for _ in $(seq 60); do virsh -c qemu:///system list >/dev/null 2>&1 && return 0; sleep 0.5; done
    return 1
}
# One VM start and destroy; records <tag>_start_rc, <tag>_made, <tag>_freed.
cycle() {
    local u
    u=$(virsh dumpxml pkg1 | meta_uuid)
    rec "$1_uuid" "$u"
    [ -e "/sys/bus/mdev/devices/$u" ]; rec "$1_before" $?
    virsh start pkg1 >"$1-start.txt" 2>&1; rec "$1_start_rc" $?
    [ -e "/sys/bus/mdev/devices/$u" ]; rec "$1_made" $?
    vgpuctl vm show pkg1 --json >"$1-show.json" 2>&1; rec "$1_show_rc" $?
    virsh destroy pkg1 >/dev/null 2>&1
    wait_gone "$u"; rec "$1_freed" $?
}

rec vgpuctl_path "$(command -v vgpuctl)"
rec hook_target "$(readlink "$hook")"
vgpuctl --version >version.txt 2>&1; rec version_rc $?

mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt /var/lib/libvirt/images
modprobe -q vfio-pci || true
virtlogd -d
start_libvirtd; rec libvirtd_rc $?
export LIBVIRT_DEFAULT_URI=qemu:///system
vgpuctl vm define --name pkg1 --memory 64 --vcpus 1 --domain-type qemu --disk none --mdev-type mbochs-small --json >define.json 2>define.err
rec define_rc $?
cycle first

vgpuctl hook uninstall >uninstall.txt 2>&1; rec uninstall_rc $?
[ -e "$hook" ] || [ -L "$hook" ]; rec hook_left_after_uninstall $?
vgpuctl hook install >install.txt 2>&1; rec install_rc $?
rec hook_target_reinstalled "$(readlink "$hook")"
pkill -x libvirtd
for _ in $(seq 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
start_libvirtd; rec libvirtd_restart_rc $?
cycle second
