# The qemu hook under a real libvirtd inside the real-kernel guest: VMs with
# vgpuctl metadata or plain mdev hostdevs start (nested TCG) and their mdevs
# are freed on destroy; 16 parallel starts for 4 free slots; a crashed hook
# cleaned up by gc.
set -u
v() { "$VGPUCTL" "$@"; }
rec() { echo "$1=$2" >>facts.txt; }
: >facts.txt
mdevs() { ls /sys/bus/mdev/devices | wc -l; }
meta_uuid() { sed -n "s/.*vgpuctl:mdev .*uuid='\([^']*\)'.*/\1/p" "$1" | head -n1; }
wait_gone() { for i in $(seq 100); do [ -e "/sys/bus/mdev/devices/$1" ] || return 0; sleep 0.1; done; return 1; }

mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt /etc/libvirt/hooks /var/lib/libvirt/images
modprobe -q vfio-pci || true
v hook install --binary "$VGPUCTL" >install.txt 2>&1; rec install_rc $?
virtlogd -d; libvirtd -d
for i in $(seq 60); do virsh -c qemu:///system list >/dev/null 2>&1 && break; sleep 0.5; done
virsh -c qemu:///system list >/dev/null 2>&1; rec libvirtd_rc $?
export LIBVIRT_DEFAULT_URI=qemu:///system
vm() { v vm xml --name "$1" --memory 64 --vcpus 1 --domain-type qemu --disk none "${@:2}"; }

# A: only vgpuctl metadata (mdev type); the hook creates it at prepare.
vm vmA --mdev-type mbochs-medium >vmA.xml; rec xmlA_rc $?
virt-xml-validate vmA.xml domain >validate.txt 2>&1; rec validateA_rc $?
uA=$(meta_uuid vmA.xml)
virsh define vmA.xml >/dev/null; rec defineA_rc $?
[ -e "/sys/bus/mdev/devices/$uA" ]; rec existsA_before $?
virsh start vmA >startA.txt 2>&1; rec startA_rc $?
[ -e "/sys/bus/mdev/devices/$uA" ]; rec existsA_running $?
rec stateA "$(virsh domstate vmA 2>&1 | head -n1)"
v list --json >listA.json
virsh destroy vmA >/dev/null 2>&1; rec destroyA_rc $?
wait_gone "$uA"; rec goneA $?
ls /run/vgpuctl/domains >journals-after-A.txt 2>&1

# B: a plain mdev hostdev with a vgpuctl/mdevctl definition, no metadata.
uB=$(v mdev define --parent mbochs --type mbochs-small)
vm vmB --mdev "$uB" | sed '/<metadata>/,/<\/metadata>/d' >vmB.xml
grep -c vgpuctl vmB.xml >vmB-vgpuctl-count.txt
virsh define vmB.xml >/dev/null
virsh start vmB >startB.txt 2>&1; rec startB_rc $?
[ -e "/sys/bus/mdev/devices/$uB" ]; rec existsB_running $?
virsh destroy vmB >/dev/null 2>&1
wait_gone "$uB"; rec goneB $?
[ -e "/etc/mdevctl.d/mbochs/$uB" ]; rec definitionB_kept $?
v hook test vmB.xml >hook-test-B.txt 2>&1; rec hook_test_rc $?

# A domain whose mdev cannot be made: a clear message, the start aborts.
u0=0badc0de-0000-4000-8000-00000000abcd
vm vmX --mdev-type mbochs-small | sed "s/uuid='[0-9a-f-]*'\/>/uuid='$u0'\/>/; s/<address uuid='[0-9a-f-]*'\/>/<address uuid='$u0'\/>/" \
    | sed '/<metadata>/,/<\/metadata>/d' >vmX.xml
virsh define vmX.xml >/dev/null
virsh start vmX >startX.txt 2>&1; rec startX_rc $?

# Concurrency: 16 domains want mbochs-large (4 free), started together.
for i in $(seq 16); do vm "c$i" --mdev-type mbochs-large >"c$i.xml"; virsh define "c$i.xml" >/dev/null; done
for round in 1 2 3; do
    for i in $(seq 16); do ( virsh start "c$i" >"start-$round-$i.txt" 2>&1; echo $? >"start-$round-$i.rc" ) & done
    wait
    rec "running_$round" "$(virsh list --name | grep -c '^c')"
    rec "mdevs_$round" "$(mdevs)"
    rec "failed_$round" "$(grep -lvx 0 start-$round-*.rc | wc -l)"
    cat start-$round-*.txt >>start-errors.txt
    for i in $(seq 16); do virsh destroy "c$i" >/dev/null 2>&1; done
    for i in $(seq 50); do [ "$(mdevs)" = 0 ] && break; sleep 0.1; done
    rec "left_$round" "$(mdevs)"
done

# Crash: kill the hook between its two creates, then gc and a real start.
# Its writes: the journal (1), the first mdev's intent, create, completion
# (2-4), the second one's intent (5) and create (6): killed before write 6.
vm vmC --mdev-type mbochs-small --mdev-type mbochs-small >vmC.xml
virsh define vmC.xml >/dev/null
VGPUCTL_FAULT=write:6:die "$VGPUCTL" hook qemu vmC prepare begin - <vmC.xml 2>crash.err; rec crash_rc $?
rec crash_leaked "$(mdevs)"
cp /run/vgpuctl/domains/*.json crash-journal.json 2>/dev/null
v gc --json >gc.json 2>&1; rec gc_rc $?
rec after_gc "$(mdevs)"
virsh start vmC >startC.txt 2>&1; rec startC_rc $?
rec runningC_mdevs "$(mdevs)"
virsh destroy vmC >/dev/null 2>&1
for i in $(seq 50); do [ "$(mdevs)" = 0 ] && break; sleep 0.1; done
rec final_mdevs "$(mdevs)"
ls /run/vgpuctl/domains >final-journals.txt 2>&1

# D: vgpuctl vm define + attach (persistent) of a new mdev through libvirt,
# started by virsh (the hook makes it), destroyed (freed), then detached.
v vm define --name vmD --memory 64 --vcpus 1 --domain-type qemu --disk none >defineD.txt 2>&1; rec defineD_rc $?
v vm attach vmD --mdev-type mbochs-medium --config >attachD.txt 2>&1; rec attachD_rc $?
uD=$(virsh dumpxml --inactive vmD | sed -n "s/.*<address uuid='\([^']*\)'.*/\1/p" | head -n1)
echo "$uD" >uD.txt
virsh start vmD >startD.txt 2>&1; rec startD_rc $?
[ -e "/sys/bus/mdev/devices/$uD" ]; rec existsD_running $?
v vm show vmD >showD.txt 2>&1
# Live attach into the running guest: either libvirt hot-plugs it, or it
# refuses and vgpuctl removes the mdev it made. Both are recorded.
v vm attach vmD --mdev-type mbochs-small --live >liveD.txt 2>&1; rec liveD_rc $?
rec liveD_mdevs "$(mdevs)"
virsh destroy vmD >/dev/null 2>&1
for i in $(seq 50); do [ "$(mdevs)" = 0 ] && break; sleep 0.1; done
rec afterD_mdevs "$(mdevs)"
v vm detach vmD --mdev "$uD" --config >detachD.txt 2>&1; rec detachD_rc $?
virsh dumpxml --inactive vmD | grep -c "$uD" >afterD-refs.txt
cp /var/log/libvirt/libvirtd.log . 2>/dev/null
exit 0
