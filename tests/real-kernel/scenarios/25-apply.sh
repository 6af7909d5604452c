# Declarative config on the real kernel: fixed-UUID mdevs applied, then the
# modules reloaded (the kernel-side analog of a reboot), then applied again:
# the same UUIDs come back.
set -u
v() { "$VGPUCTL" "$@"; }
rec() { echo "$1=$2" >>facts.txt; }
: >facts.txt
for d in /sys/bus/mdev/devices/*; do [ -e "$d" ] && echo 1 >"$d/remove"; done
cat >host.toml <<'TOML'
[[mdev]]
uuid = "aaaaaaaa-0000-4000-8000-000000000001"
parent = "mbochs"
type = "mbochs-large"

[[mdev]]
uuid = "aaaaaaaa-0000-4000-8000-000000000002"
parent = "mtty"
type = "Dual port serial"
TOML
v plan -f host.toml >plan-bad-type.txt 2>&1; rec bad_type_rc $?
sed -i 's/type = "Dual port serial"/type = "mtty-2"/' host.toml
v apply -f host.toml --check >check1.txt 2>&1; rec check1_rc $?
v apply -f host.toml >apply1.txt 2>&1; rec apply1_rc $?
ls /sys/bus/mdev/devices | sort >uuids1.txt
v apply -f host.toml --check >/dev/null 2>&1; rec check2_rc $?
# "reboot": devices gone, modules reloaded
for d in /sys/bus/mdev/devices/*; do echo 1 >"$d/remove"; done
rmmod mbochs mtty; modprobe mbochs; modprobe mtty
v apply -f host.toml --check >check3.txt 2>&1; rec check3_rc $?
v apply -f host.toml >apply2.txt 2>&1; rec apply2_rc $?
ls /sys/bus/mdev/devices | sort >uuids2.txt
v apply -f host.toml --check >/dev/null 2>&1; rec check4_rc $?
for d in /sys/bus/mdev/devices/*; do echo 1 >"$d/remove"; done
rm -f /etc/mdevctl.d/mbochs/aaaaaaaa-* /etc/mdevctl.d/mtty/aaaaaaaa-*
exit 0
