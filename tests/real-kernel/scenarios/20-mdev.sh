# The mdev lifecycle against the real mdev core: create/list/remove on each
# parent, the shared mbochs pool, kernel errors, 32 racing creates, mdevctl
# interoperability both ways, and restore after a module reload.
set -u
v() { "$VGPUCTL" "$@"; }
avail() { cat "/sys/class/mdev_bus/$1/mdev_supported_types/$2/available_instances"; }
rec() { echo "$1=$2" >>facts.txt; }
: >facts.txt

# create / list / remove on each parent
for pt in mbochs:mbochs-small mdpy:mdpy-hd mtty:mtty-1; do
    p=${pt%%:*}; t=${pt##*:}
    u=$(v mdev create --parent "$p" --type "$t"); rec "create_$p" $?
    [ -e "/sys/bus/mdev/devices/$u" ]; rec "exists_$p" $?
    rec "type_$p" "$(basename "$(readlink "/sys/bus/mdev/devices/$u/mdev_type")")"
    v mdev list --json >"list_$p.json"
    v mdev remove "$u"; rec "remove_$p" $?
    [ -e "/sys/bus/mdev/devices/$u" ]; rec "gone_$p" $?
done

# type by name (mtty's name is "Dual port serial")
u=$(v mdev create --parent mtty --type "Dual port serial"); rec create_by_name $?
rec by_name_type "$(basename "$(readlink "/sys/bus/mdev/devices/$u/mdev_type")")"
v mdev remove "$u"

# shared pool: one large lowers small and medium
rec pool_before "$(avail mbochs mbochs-small)/$(avail mbochs mbochs-medium)/$(avail mbochs mbochs-large)"
big=$(v mdev create --parent mbochs --type mbochs-large --json); rec pool_create $?
echo "$big" >pool-create.json
rec pool_after "$(avail mbochs mbochs-small)/$(avail mbochs mbochs-medium)/$(avail mbochs mbochs-large)"
bu=$(sed -n 's/.*"uuid": "\(.*\)".*/\1/p' pool-create.json)

# duplicate UUID
v mdev create --parent mdpy --type mdpy-vga --uuid "$bu" 2>dup.err; rec dup_rc $?

# exhaustion: fill large, then one more
for i in 1 2 3; do v mdev create --parent mbochs --type mbochs-large >/dev/null; done
v mdev create --parent mbochs --type mbochs-large 2>full.err; rec full_rc $?
# bypass our pre-check to see the kernel's own errno through our mapping
echo "$(cat /proc/sys/kernel/random/uuid)" >/sys/class/mdev_bus/mbochs/mdev_supported_types/mbochs-large/create 2>kernel-full.err; rec kernel_full_rc $?
for d in /sys/bus/mdev/devices/*; do echo 1 >"$d/remove"; done

# removing a missing device
v mdev remove 0badc0de-0000-4000-8000-000000000000 2>missing.err; rec missing_rc $?
v mdev remove 0badc0de-0000-4000-8000-000000000000 --if-exists; rec missing_ok_rc $?

# bad input: nothing may change
ls /sys/bus/mdev/devices >before-bad.txt
v mdev create --parent ../mbochs --type mbochs-large 2>bad1.err; rec bad_parent_rc $?
v mdev create --parent mbochs --type ../mdpy/mdev_supported_types/mdpy-vga 2>bad2.err; rec bad_type_rc $?
v mdev create --parent mbochs --type mbochs-large --uuid 1234 2>bad3.err; rec bad_uuid_rc $?
v mdev create --parent nosuch --type x 2>bad4.err; rec bad_unknown_rc $?
ls /sys/bus/mdev/devices >after-bad.txt

# 32 racing creates on mbochs-large (4 free): exactly 4 succeed
rec race_free "$(avail mbochs mbochs-large)"
for i in $(seq 32); do
    ( v mdev create --parent mbochs --type mbochs-large >"race.$i.out" 2>"race.$i.err"; echo $? >"race.$i.rc" ) &
done
wait
rec race_ok "$(grep -lx 0 race.*.rc | wc -l)"
rec race_devices "$(ls /sys/bus/mdev/devices | wc -l)"
cat race.*.err >race-errors.txt
for d in /sys/bus/mdev/devices/*; do echo 1 >"$d/remove"; done
rec race_left "$(ls /sys/bus/mdev/devices | wc -l)"

# mdevctl interop: it lists our definitions, we list and start its
ours=$(v mdev create --parent mbochs --type mbochs-medium --persist --auto); rec ours_rc $?
mdevctl list --defined >mdevctl-defined.txt 2>&1; rec mdevctl_list_rc $?
mdevctl list >mdevctl-active.txt 2>&1
theirs=8e1a1b22-3a55-4c8f-9d7c-0b5f43aa0001
mdevctl define -u "$theirs" -p mdpy -t mdpy-xga 2>mdevctl-define.err; rec mdevctl_define_rc $?
mdevctl modify -u "$theirs" --auto
v mdev list --defined --json >ours-defined.json; rec ours_list_rc $?
v mdev start "$theirs" --json >start-theirs.json; rec start_theirs_rc $?
mdevctl list >mdevctl-after-start.txt 2>&1
rec ours_uuid "$ours"
rec theirs_uuid "$theirs"

# mdevctl parity, one file at a time (mdevctl 1.2 stops listing anything
# when one file is invalid): files mdevctl reads, vgpuctl reads the same
# way; files it refuses, vgpuctl refuses, and never deletes.
lenient=8e1a1b22-3a55-4c8f-9d7c-0b5f43aa0002
refused=8e1a1b22-3a55-4c8f-9d7c-0b5f43aa0003
mkdir -p /etc/mdevctl.d/mdpy
printf '{"mdev_type": "mdpy-xga", "start": "sometimes", "attrs": null, "comment": "not a key of mdevctl"}' >/etc/mdevctl.d/mdpy/$lenient
mdevctl list --defined >parity-mdevctl-lenient.txt 2>&1; rec parity_mdevctl_list_lenient $?
v mdev list --defined --json >parity-ours-lenient.json 2>parity-ours-lenient.err; rec parity_ours_list_lenient $?
mdevctl start -u $lenient >parity-mdevctl-start-lenient.txt 2>&1; rec parity_mdevctl_start_lenient $?
[ -e /sys/bus/mdev/devices/$lenient ] && echo 1 >/sys/bus/mdev/devices/$lenient/remove
v mdev start $lenient --json >parity-start-lenient.json 2>&1; rec parity_start_lenient $?
[ -e /sys/bus/mdev/devices/$lenient ]; rec parity_lenient_exists $?
[ -e /sys/bus/mdev/devices/$lenient ] && echo 1 >/sys/bus/mdev/devices/$lenient/remove
rm -f /etc/mdevctl.d/mdpy/$lenient
printf '["mdpy-xga", "auto"]' >/etc/mdevctl.d/mdpy/$refused
mdevctl list --defined >parity-mdevctl-refused.txt 2>&1; rec parity_mdevctl_list_refused $?
v mdev list --defined --json >parity-ours-refused.json 2>parity-ours-refused.err; rec parity_ours_list_refused $?
mdevctl start -u $refused >parity-mdevctl-start-refused.txt 2>&1; rec parity_mdevctl_start_refused $?
[ -e /sys/bus/mdev/devices/$refused ] && echo 1 >/sys/bus/mdev/devices/$refused/remove
v mdev start $refused >parity-start-refused.txt 2>&1; rec parity_start_refused $?
v mdev undefine $refused >parity-undefine-refused.txt 2>&1; rec parity_undefine_refused $?
[ -e /etc/mdevctl.d/mdpy/$refused ]; rec parity_refused_kept $?
rec parity_lenient "$lenient"
rec parity_refused "$refused"
rm -f /etc/mdevctl.d/mdpy/$refused

# restore after the modules are reloaded (the kernel-side reboot)
for d in /sys/bus/mdev/devices/*; do echo 1 >"$d/remove"; done
rmmod mdpy mbochs; rec rmmod_rc $?
# a parent that comes back late: restore must wait for it
( sleep 2; modprobe mdpy ) &
modprobe mbochs
start=$(date +%s%N)
v mdev restore --wait 30 --json >restore.json; rec restore_rc $?
rec restore_ms $(( ($(date +%s%N) - start) / 1000000 ))
wait
ls /sys/bus/mdev/devices >after-restore.txt
v mdev restore --wait 1 --json >restore-again.json; rec restore_again_rc $?
for d in /sys/bus/mdev/devices/*; do echo 1 >"$d/remove"; done
v mdev undefine "$ours"; v mdev undefine "$theirs"
exit 0
