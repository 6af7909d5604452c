# Hook latency: prepare+release as libvirt runs it (XML on stdin, through the
# installed qemu.d symlink), for domains with no GPU, 1 and 4 mbochs mdevs,
# against a shell-script hook that parses the XML and calls mdevctl, and
# against a bare process start. Writes results.txt: "name microseconds".
set -eu
N=${BENCH_N:-20}
now() { date +%s%N; }
per_op() { echo $(( ($2 - $1) / N / 1000 )); }
mkdir -p /etc/libvirt/hooks/qemu.d
"$VGPUCTL" hook install --binary "$VGPUCTL" >/dev/null
H=/etc/libvirt/hooks/qemu.d/vgpuctl

# The shell-script hook an admin would write: parse with sed, call mdevctl.
cat >/tmp/script-hook <<'SH'
#!/bin/sh
xml=$(cat)
case "$2/$3" in
prepare/begin)
    echo "$xml" | sed -n "s/.*vgpuctl:mdev type='\([^']*\)' parent='\([^']*\)' uuid='\([^']*\)'.*/\1 \2 \3/p" |
    while read -r t p u; do mdevctl start -u "$u" -p "$p" -t "$t" || exit 1; done ;;
release/end)
    echo "$xml" | sed -n "s/.*vgpuctl:mdev .*uuid='\([^']*\)'.*/\1/p" |
    while read -r u; do mdevctl stop -u "$u"; done ;;
esac
exit 0
SH
chmod +x /tmp/script-hook

xml() { "$VGPUCTL" vm xml --name "$1" --memory 64 --vcpus 1 --domain-type qemu --disk none "${@:2}"; }
xml none >none.xml
xml one --mdev-type mbochs-small --parent mbochs >one.xml
xml four --mdev-type mbochs-small --mdev-type mbochs-small --mdev-type mbochs-small --mdev-type mbochs-small --parent mbochs >four.xml

run() { # name hook xml
    local t0 t1
    "$2" "$1" prepare begin - <"$3" >/dev/null; "$2" "$1" release end - <"$3" >/dev/null  # warm
    t0=$(now)
    for i in $(seq $N); do
        "$2" "$1" prepare begin - <"$3" >/dev/null
        "$2" "$1" release end - <"$3" >/dev/null
    done
    t1=$(now)
    echo "$4 $(per_op $t0 $t1)" >>results.txt
}
# A baseline build (VGPUCTL_BASELINE, e.g. the previous commit) as its own
# qemu.d hook, measured in the same boot: what a change costs the hook.
if [ -n "${VGPUCTL_BASELINE:-}" ]; then
    mkdir -p /tmp/baseline/qemu.d
    ln -sf "$VGPUCTL_BASELINE" /tmp/baseline/qemu.d/vgpuctl
fi
for d in none one four; do
    run "$d" "$H" "$d.xml" "vgpuctl_$d"
    if [ -n "${VGPUCTL_BASELINE:-}" ]; then run "$d" /tmp/baseline/qemu.d/vgpuctl "$d.xml" "baseline_$d"; fi
    run "$d" /tmp/script-hook "$d.xml" "script_$d"
    [ "$(ls /sys/bus/mdev/devices | wc -l)" = 0 ] || echo "leak after $d" >>results.txt
done
t0=$(now); for i in $(seq $N); do /bin/true; /bin/true; done; t1=$(now)
echo "bin_true_x2 $(per_op $t0 $t1)" >>results.txt
t0=$(now); for i in $(seq $N); do
    u=$(cat /proc/sys/kernel/random/uuid)
    echo "$u" >/sys/class/mdev_bus/mbochs/mdev_supported_types/mbochs-small/create
    echo 1 >"/sys/bus/mdev/devices/$u/remove"
done; t1=$(now)
echo "raw_sysfs_create_remove $(per_op $t0 $t1)" >>results.txt
exit 0
