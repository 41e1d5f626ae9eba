#!/usr/bin/env bash
# `make deb`: a Debian package of the `make dist` binary, built with dpkg-deb: /usr/bin/onetun, the
# manual page, the bash, zsh and fish completions, the unit /usr/lib/systemd/system/onetun@.service,
# and /usr/share/doc/onetun (copyright in the machine-readable format, changelog.Debian.gz, README).
# The version is the binary's (`onetun --version`) with the revision of dist/debian/changelog, whose
# first entry must be for that version; Depends is what dpkg-shlibdeps finds the binary needs (libc6).
#
# usage: deb.sh [BINARY]   (default .build/dist/onetun, which make dist leaves); DEB_MAINTAINER overrides Maintainer.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/dist/onetun}
maintainer=${DEB_MAINTAINER:-onetun maintainers <maintainers@users.noreply.r-seed-fa851848.example>}

fail() { echo "deb.sh: $*" >&2; exit 1; }
[[ -x $binary ]] || fail "$binary is not an executable; run make dist first"

upstream=$("$binary" --version)
# The changelog's first line: "onetun (0.1.0-1) unstable; urgency=medium".
version=$(sed -n '1s/^onetun (\([^)]*\)).*/\1/p' dist/debian/changelog)
[[ ${version%-*} == "$upstream" ]] ||
    fail "dist/debian/changelog starts at ${version:-nothing}, the binary is $upstream: add an entry for $upstream-1"
arch=$(dpkg --print-architecture)

# Staged as debhelper would (debian/onetun beside debian/control), where dpkg-shlibdeps expects a
# package's files.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022
root=$stage/debian/onetun
install -d "$root/DEBIAN"
printf 'Source: onetun\n\nPackage: onetun\nArchitecture: any\n' >"$stage/debian/control"
bash scripts/install-files.sh --gzip-man --zsh-dir share/zsh/vendor-completions "$binary" "$root/usr" /usr
doc=$root/usr/share/doc/onetun
install -d "$doc"
install -m 644 dist/debian/copyright "$doc/copyright"
gzip -9n <dist/debian/changelog >"$doc/changelog.Debian.gz"
gzip -9n <README.md >"$doc/README.md.gz"
chmod 644 "$doc/changelog.Debian.gz" "$doc/README.md.gz"

install -d "$root/usr/share/lintian/overrides"
cat >"$root/usr/share/lintian/overrides/onetun" <<'EOF'
# Built from the source tree by `make deb`, not uploaded to Debian: there is no ITP bug to close.
onetun: initial-upload-closes-no-bugs
EOF
chmod 644 "$root/usr/share/lintian/overrides/onetun"

depends=$(cd "$stage" && dpkg-shlibdeps -O debian/onetun/usr/bin/onetun | sed -n 's/^shlibs:Depends=//p')
[[ -n $depends ]] || fail "dpkg-shlibdeps found no dependencies for $binary"

(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: onetun
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: net
Priority: optional
Description: user-space WireGuard port forwarder
 onetun reaches TCP and UDP ports behind a WireGuard peer through local ports,
 and the other way round, without root, a kernel module or a network
 interface: the WireGuard protocol and a TCP/IP stack run inside the process,
 which uses only ordinary sockets. It also offers SOCKS5 and HTTP proxies into
 the tunnel, reads wg-quick and wireproxy configuration files, and is
 compatible with the command line of the Rust onetun.
 .
 The package has the systemd unit onetun@.service, which runs
 onetun -c /etc/onetun/NAME.conf as an unprivileged dynamic user.
EOF
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

deb=onetun_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb: $version, $arch, Depends: $depends, Installed-Size: $installed_size KiB"
