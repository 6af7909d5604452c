#!/usr/bin/env bash
# Builds the kernel's vfio-mdev sample drivers (mtty, mdpy, mbochs) out of tree
# against the installed Debian kernel and installs them under
# /lib/modules/<ver>/extra. Idempotent: does nothing when they are installed.
# Prints the kernel version it used.
set -euo pipefail

kver=""
for h in /usr/src/linux-headers-*-amd64; do
    [ -d "$h" ] || continue
    v=${h#/usr/src/linux-headers-}
    [ -f "/boot/vmlinuz-$v" ] && kver=$v
done
if [ -z "$kver" ]; then
    echo "build-modules: no /boot/vmlinuz-<ver> with matching /usr/src/linux-headers-<ver> (install linux-image-amd64 linux-headers-amd64)" >&2
    exit 3
fi
src=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | head -n1 || true)
if [ -z "$src" ]; then
    echo "build-modules: no /usr/src/linux-source-*.tar.xz (install linux-source-6.1)" >&2
    exit 3
fi
extra=/lib/modules/$kver/extra
if [ -f "$extra/mbochs.ko" ] && [ -f "$extra/mdpy.ko" ] && [ -f "$extra/mtty.ko" ]; then
    echo "$kver"
    exit 0
fi
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
top=$(basename "$src" .tar.xz)
tar -C "$d" -xf "$src" --strip-components=3 "$top/samples/vfio-mdev/"
printf 'obj-m := mtty.o mdpy.o mbochs.o\n' > "$d/Kbuild"
make -s -C "/usr/src/linux-headers-$kver" M="$d" modules >&2
mkdir -p "$extra"
cp "$d"/mtty.ko "$d"/mdpy.ko "$d"/mbochs.ko "$extra/"
depmod "$kver"
echo "$kver"
