# Inventory against the real kernel's mdev sysfs (no NVIDIA driver here).
# Raw sysfs values are recorded beside vgpuctl's view so the test compares
# the two, rather than comparing vgpuctl with hard-coded numbers alone.
set -e
for t in /sys/class/mdev_bus/*/mdev_supported_types/*; do
    echo "$(basename "$(dirname "$(dirname "$t")")") $(basename "$t") $(cat "$t/available_instances")"
done >sysfs-fresh.txt
$VGPUCTL list --json >list-fresh.json
$VGPUCTL list >list-fresh.txt
$VGPUCTL types --json >types.json

# One mdev of each parent, created by hand, then listed.
u1=$(cat /proc/sys/kernel/random/uuid)
u2=$(cat /proc/sys/kernel/random/uuid)
u3=$(cat /proc/sys/kernel/random/uuid)
echo "$u1" >/sys/class/mdev_bus/mbochs/mdev_supported_types/mbochs-large/create
echo "$u2" >/sys/class/mdev_bus/mdpy/mdev_supported_types/mdpy-vga/create
echo "$u3" >/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create
for u in $u1 $u2 $u3; do
    echo "$u $(basename "$(readlink /sys/bus/mdev/devices/$u/iommu_group)")"
done >mdev-groups.txt
for t in /sys/class/mdev_bus/*/mdev_supported_types/*; do
    echo "$(basename "$(dirname "$(dirname "$t")")") $(basename "$t") $(cat "$t/available_instances")"
done >sysfs-with-mdevs.txt
$VGPUCTL list --json >list-with-mdevs.json
$VGPUCTL list >list-with-mdevs.txt
for u in $u1 $u2 $u3; do echo 1 >/sys/bus/mdev/devices/$u/remove; done

# A relocated root that is missing, and one with garbage: errors, not panics.
set +e
$VGPUCTL --root /nonexistent list >/dev/null 2>missing-root.err
echo $? >missing-root.rc
exit 0
