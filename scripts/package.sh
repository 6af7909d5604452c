#!/usr/bin/env bash
# Builds vgpuctl's Debian package and RPM from this tree, from one staged
# file tree (so both hold the same files):
#
#   scripts/package.sh [--no-build] [deb|rpm|all]        (default: all)
#
# Output: target/package/vgpuctl_<version>-<rev>_amd64.deb and
# target/package/vgpuctl-<version>-<rev>.x86_64.rpm.
# VGPUCTL_PACKAGE_REVISION sets <rev> (default 1); VGPUCTL_MAINTAINER the
# Debian Maintainer field. Needs cargo, dpkg-dev (dpkg-deb, dpkg-shlibdeps),
# binutils, gzip and, for the RPM, Debian's `rpm` package (rpmbuild).
# docs/install.md says why these tools and not cargo-deb/cargo-generate-rpm.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

build=1
what=all
for a in "$@"; do
    case "$a" in
    --no-build) build=0 ;;
    deb | rpm | all) what=$a ;;
    *)
        echo "usage: scripts/package.sh [--no-build] [deb|rpm|all]" >&2
        exit 64
        ;;
    esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
revision=${VGPUCTL_PACKAGE_REVISION:-1}
maintainer=${VGPUCTL_MAINTAINER:-vgpuctl developers <vgpuctl@example.org>}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Reproducible: every file's time is the commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
triple=x86_64-unknown-linux-gnu
out=$repo/target/package
units="vgpuctl-apply.service vgpuctl-mdev-restore.service vgpuctl-gc.timer vgpuctl-metrics.timer"

if [ "$build" = 1 ]; then
    cargo build --release --locked --bin vgpuctl --example gen-docs
    (cd libvirt-helper && cargo build --release --locked)
    (cd nvml-helper && cargo build --release --locked)
fi
bin=target/$triple/release/vgpuctl
gen=target/$triple/release/examples/gen-docs
libvirt_helper=libvirt-helper/target/$triple/release/vgpuctl-libvirt
nvml_helper=nvml-helper/target/$triple/release/vgpuctl-nvml
for f in "$bin" "$gen" "$libvirt_helper" "$nvml_helper"; do
    [ -x "$f" ] || { echo "package: $f is not built (run without --no-build)" >&2; exit 1; }
done

# --- the staged tree, shared by both formats ---------------------------------
stage=$out/stage
rm -rf "$out"
mkdir -p "$stage"
install -D -m755 "$bin" "$stage/usr/bin/vgpuctl"
install -D -m755 "$libvirt_helper" "$stage/usr/libexec/vgpuctl/vgpuctl-libvirt"
install -D -m755 "$nvml_helper" "$stage/usr/libexec/vgpuctl/vgpuctl-nvml"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    "$stage/usr/bin/vgpuctl" "$stage/usr/libexec/vgpuctl/vgpuctl-libvirt" "$stage/usr/libexec/vgpuctl/vgpuctl-nvml"
# Units and the hook entry are written by vgpuctl itself, the one owner of
# what they contain (the binary path, vgpuctl's hook marker).
"$stage/usr/bin/vgpuctl" --root "$stage" install-units --unit-dir /usr/lib/systemd/system --binary /usr/bin/vgpuctl >/dev/null
"$stage/usr/bin/vgpuctl" --root "$stage" hook install --binary /usr/bin/vgpuctl >/dev/null
for t in xml-templates/*.xml; do install -D -m644 "$t" "$stage/usr/share/vgpuctl/$t"; done
doc=$stage/usr/share/doc/vgpuctl
install -D -m644 README.md "$doc/README.md"
for d in docs/*.md; do install -m644 "$d" "$doc/"; done
install -D -m644 docs/examples/vgpuctl-alerts.yml "$doc/examples/vgpuctl-alerts.yml"
"$gen" "$out/gen" >/dev/null
mkdir -p "$stage/usr/share/man/man1"
for m in "$out"/gen/man1/*.1; do gzip -9n <"$m" >"$stage/usr/share/man/man1/$(basename "$m").gz"; done
install -D -m644 "$out/gen/completions/vgpuctl.bash" "$stage/usr/share/bash-completion/completions/vgpuctl"
install -D -m644 "$out/gen/completions/vgpuctl.fish" "$stage/usr/share/fish/vendor_completions.d/vgpuctl.fish"
install -D -m644 "$out/gen/completions/_vgpuctl" "$stage/zsh/_vgpuctl" # moved per format below
chmod -R u=rwX,go=rX "$stage"
find "$stage" -type d -exec chmod 755 {} +

# Copies the staged tree to $1 with the two paths that differ by
# distribution: systemd units ($2) and zsh completions ($3).
place() {
    cp -a "$stage" "$1"
    mkdir -p "$1/$2" "$1/$3"
    mv "$1"/usr/lib/systemd/system/* "$1/$2/" 2>/dev/null || true
    mv "$1/zsh/_vgpuctl" "$1/$3/_vgpuctl"
    rmdir "$1/zsh" "$1/usr/lib/systemd/system" "$1/usr/lib/systemd" "$1/usr/lib" 2>/dev/null || true
    find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# --- Debian ------------------------------------------------------------------
if [ "$what" = deb ] || [ "$what" = all ]; then
    root=$out/deb-root
    # Debian 12 keeps units in /lib/systemd/system; zsh's vendor folder.
    place "$root" lib/systemd/system usr/share/zsh/vendor-completions
    install -D -m644 packaging/debian/copyright "$root/usr/share/doc/vgpuctl/copyright"
    install -D -m644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/vgpuctl"
    date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
    printf 'vgpuctl (%s-%s) unstable; urgency=medium\n\n  * Built from vgpuctl commit %s.\n\n -- %s  %s\n' \
        "$version" "$revision" "$commit" "$maintainer" "$date" | gzip -9n >"$root/usr/share/doc/vgpuctl/changelog.Debian.gz"
    mkdir -p "$root/DEBIAN"
    install -m755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
    # Depends from the libraries the helpers link (vgpuctl itself is static).
    shl=$(mktemp -d)
    mkdir -p "$shl/debian"
    printf 'Source: vgpuctl\n\nPackage: vgpuctl\nArchitecture: amd64\n' >"$shl/debian/control"
    depends=$(cd "$shl" && dpkg-shlibdeps -O "$root/usr/libexec/vgpuctl/vgpuctl-libvirt" "$root/usr/libexec/vgpuctl/vgpuctl-nvml" 2>/dev/null |
        sed -n 's/^shlibs:Depends=//p')
    rm -rf "$shl"
    [ -n "$depends" ] || { echo "package: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    sed -e "s/@VERSION@/$version-$revision/" -e "s/@INSTALLED_SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
        -e "s/@MAINTAINER@/$maintainer/" packaging/debian/control.in >"$root/DEBIAN/control"
    (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$out/vgpuctl_${version}-${revision}_amd64.deb" >/dev/null
    echo "$out/vgpuctl_${version}-${revision}_amd64.deb"
fi

# --- RPM ---------------------------------------------------------------------
if [ "$what" = rpm ] || [ "$what" = all ]; then
    root=$out/rpm-root
    place "$root" usr/lib/systemd/system usr/share/zsh/site-functions
    files=$(cd "$root" && {
        # The folders that are vgpuctl's own; everything else is listed by file.
        printf '%%dir %s\n' /usr/libexec/vgpuctl /usr/share/vgpuctl /usr/share/vgpuctl/xml-templates /usr/share/doc/vgpuctl /usr/share/doc/vgpuctl/examples
        find . ! -type d | sed 's|^\.||' | LC_ALL=C sort
    })
    spec=$out/vgpuctl.spec
    awk -v files="$files" -v stage="$root" -v v="$version" -v r="$revision" -v c="$commit" -v u="$units" '
        { gsub(/@VERSION@/, v); gsub(/@RELEASE@/, r); gsub(/@COMMIT@/, c); gsub(/@UNITS@/, u); gsub(/@STAGE@/, stage) }
        /^@FILES@$/ { print files; next } { print }' packaging/rpm/vgpuctl.spec.in >"$spec"
    rpmbuild --quiet -bb --target x86_64 \
        --define "_topdir $out/rpmbuild" --define "_rpmdir $out" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define "_buildhost vgpuctl-build" --define "use_source_date_epoch_as_buildtime 1" \
        "$spec" >/dev/null
    echo "$out/vgpuctl-${version}-${revision}.x86_64.rpm"
fi
