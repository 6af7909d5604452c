# Times vgpuctl against mdevctl 1.2 on the same real kernel, same run:
# create+remove of one mbochs device, and listing with 100 definitions.
# Writes results.txt: "name ms_per_op" lines.
set -eu
N=${BENCH_N:-20}
v() { "$VGPUCTL" "$@"; }
now() { date +%s%N; }
per_op() { echo $(( ($2 - $1) / N / 1000 )); }   # microseconds per iteration

# warm caches (binaries, page cache)
v list >/dev/null; mdevctl list >/dev/null

# raw sysfs create+remove: the floor any tool pays
t0=$(now)
for i in $(seq $N); do
    u=$(cat /proc/sys/kernel/random/uuid)
    echo "$u" >/sys/class/mdev_bus/mbochs/mdev_supported_types/mbochs-large/create
    echo 1 >"/sys/bus/mdev/devices/$u/remove"
done
t1=$(now); echo "raw_create_remove $(per_op $t0 $t1)" >>results.txt

t0=$(now)
for i in $(seq $N); do
    u=$(cat /proc/sys/kernel/random/uuid)
    mdevctl start -u "$u" -p mbochs -t mbochs-large
    mdevctl stop -u "$u"
done
t1=$(now); echo "mdevctl_start_stop $(per_op $t0 $t1)" >>results.txt

t0=$(now)
for i in $(seq $N); do
    u=$(cat /proc/sys/kernel/random/uuid)
    v mdev create --parent mbochs --type mbochs-large --uuid "$u" >/dev/null
    v mdev remove "$u"
done
t1=$(now); echo "vgpuctl_create_remove $(per_op $t0 $t1)" >>results.txt

# 100 definitions (manual, so nothing starts), listed by both tools
for i in $(seq 100); do v mdev define --parent mbochs --type mbochs-small >/dev/null; done
t0=$(now); for i in $(seq $N); do mdevctl list --defined >/dev/null; done; t1=$(now)
echo "mdevctl_list_defined_100 $(per_op $t0 $t1)" >>results.txt
t0=$(now); for i in $(seq $N); do v mdev list --defined >/dev/null; done; t1=$(now)
echo "vgpuctl_list_defined_100 $(per_op $t0 $t1)" >>results.txt
mdevctl list --defined | grep -c . >mdevctl-count.txt
v mdev list --defined --json | grep -c '"uuid"' >vgpuctl-count.txt

# active listing with 4 devices present
for i in 1 2 3 4; do v mdev create --parent mbochs --type mbochs-large >/dev/null; done
t0=$(now); for i in $(seq $N); do mdevctl list >/dev/null; done; t1=$(now)
echo "mdevctl_list_active $(per_op $t0 $t1)" >>results.txt
t0=$(now); for i in $(seq $N); do v mdev list >/dev/null; done; t1=$(now)
echo "vgpuctl_list_active $(per_op $t0 $t1)" >>results.txt
t0=$(now); for i in $(seq $N); do /bin/true; done; t1=$(now)
echo "bin_true $(per_op $t0 $t1)" >>results.txt
exit 0
