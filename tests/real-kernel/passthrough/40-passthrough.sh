# Real vfio-pci passthrough in a guest with an emulated IOMMU: bochs-display
# to vfio-pci and back, the boot VGA refused, a shared group reported, the
# VFIO probe, and a libvirt VM defined by vgpuctl with the device.
set -u
v() { "$VGPUCTL" "$@"; }
rec() { echo "$1=$2" >>facts.txt; }
: >facts.txt
drv() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null || echo none; }
modprobe vfio-pci; rec modprobe_rc $?
ls /sys/kernel/iommu_groups | wc -l >groups.txt
for d in /sys/bus/pci/devices/*; do echo "$(basename "$d") $(cat "$d/class") $(cat "$d/boot_vga" 2>/dev/null || echo -) $(drv "$(basename "$d")") $(basename "$(readlink "$d/iommu_group")")"; done >devices.txt
v list --json >list.json
BOCHS=0000:00:0b.0; VGA=0000:00:0a.0; LPC=0000:00:1f.0
rec bochs_before "$(drv $BOCHS)"
v passthrough check $BOCHS --json >check-bochs.json; rec check_bochs_rc $?
v passthrough prepare $BOCHS --json >prepare.json 2>prepare.err; rec prepare_rc $?
rec bochs_prepared "$(drv $BOCHS)"
g=$(basename "$(readlink /sys/bus/pci/devices/$BOCHS/iommu_group)")
[ -e "/dev/vfio/$g" ]; rec vfio_node $?
v passthrough check $BOCHS --probe --json >probe.json 2>probe.err; rec probe_rc $?
v passthrough release $BOCHS >release.txt 2>&1; rec release_rc $?
rec bochs_released "$(drv $BOCHS)"
v passthrough prepare $VGA >vga.txt 2>&1; rec vga_rc $?
rec vga_driver "$(drv $VGA)"
v passthrough check $LPC --json >lpc.json 2>&1; rec lpc_rc $?

# A VM with the GPU, defined by vgpuctl, started by libvirt (managed='yes').
mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt /etc/libvirt/hooks
v hook install --binary "$VGPUCTL" >/dev/null
virtlogd -d; libvirtd -d
for i in $(seq 60); do virsh -c qemu:///system list >/dev/null 2>&1 && break; sleep 0.5; done
export LIBVIRT_DEFAULT_URI=qemu:///system
v vm define --name pt --memory 64 --vcpus 1 --domain-type qemu --disk none --passthrough $BOCHS >define.txt 2>&1; rec define_rc $?
virsh dumpxml pt >pt.xml
virsh start pt >start.txt 2>&1; rec start_rc $?
rec bochs_running "$(drv $BOCHS)"
v vm show pt >show.txt 2>&1
virsh destroy pt >/dev/null 2>&1
for i in $(seq 50); do [ "$(drv $BOCHS)" != vfio-pci ] && break; sleep 0.1; done
rec bochs_after_vm "$(drv $BOCHS)"
v vm define --name bad --disk none --passthrough $VGA >badvm.txt 2>&1; rec badvm_rc $?
exit 0
