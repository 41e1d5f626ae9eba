#!/usr/bin/env bash
# `make dist`: onetun for Linux machines without Swift, libuv or libsodium.
#
# The Swift standard library (--static-swift-stdlib), libuv, libsodium, libstdc++ and libgcc's unwinder
# are linked statically, so the binary needs only the C library (glibc, the build machine's version or
# later) and its loader. It is built in a scratch directory of its own (.build/dist), so the ordinary
# builds in .build are not touched, and packed with the manual page, the shell completions, the systemd
# unit and README.md into onetun-VERSION-linux-ARCH.tar.gz: a /usr/local tree, installed by
#   tar -C /usr/local --strip-components=1 -xzf onetun-VERSION-linux-ARCH.tar.gz
#
# SwiftPM links the systemLibrary targets with what pkg-config says (-luv, -lsodium), which the linker
# resolves to the shared libraries. Here PKG_CONFIG_PATH puts our own libuv.pc and libsodium.pc first;
# they name a directory holding only static archives (symlinks to the -dev packages' .a files, and to
# libstdc++.a for the -lstdc++ of the Swift runtime), and a directory searched first that has no .so
# makes the linker take the .a.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
scratch=.build/dist
libs=$PWD/$scratch/static-libs

fail() { echo "dist.sh: $*" >&2; exit 1; }

# The first of NAMES found in DIR, as an absolute path.
archive() {
    local dir=$1 name
    shift
    for name; do
        [[ -f $dir/$name ]] && { echo "$dir/$name"; return 0; }
    done
    fail "none of $* in $dir (is the -dev package installed?)"
}

libdir() { pkg-config --variable=libdir "$1" || fail "pkg-config knows no $1 (is the -dev package installed?)"; }

mkdir -p "$libs/pkgconfig"
# Debian's libuv1-dev names its archive libuv_a.a; elsewhere it is libuv.a.
ln -sfn "$(archive "$(libdir libuv)" libuv_a.a libuv.a)" "$libs/libuv.a"
ln -sfn "$(archive "$(libdir libsodium)" libsodium.a)" "$libs/libsodium.a"
# The Swift toolchain's clang knows where GCC's libstdc++.a is (it prints the bare name when it does not).
swift_bin=$(dirname "$(readlink -f "$(command -v "$SWIFT")")")
libstdcxx=$("$swift_bin/clang" -print-file-name=libstdc++.a)
[[ $libstdcxx == /* && -f $libstdcxx ]] || fail "no libstdc++.a (install libstdc++-12-dev or the GCC that Swift uses)"
ln -sfn "$libstdcxx" "$libs/libstdc++.a"

# The same flags as the system's .pc files, with our directory of archives in place of theirs.
write_pc() {
    local name=$1 libs_line=$2
    printf 'Name: %s\nDescription: %s, linked statically (make dist)\nVersion: %s\nLibs: %s\nCflags: %s\n' \
        "$name" "$name" "$(pkg-config --modversion "$name")" "$libs_line" "$(pkg-config --cflags "$name")" \
        >"$libs/pkgconfig/$name.pc"
}
write_pc libuv "-L$libs -luv -lpthread -ldl -lrt"
write_pc libsodium "-L$libs -lsodium"

# -static-libgcc: clang links libgcc_eh (the unwinder libstdc++ and the Swift runtime use) instead of
# libgcc_s.so. -z now: the whole GOT read-only after start (with the default -z relro).
PKG_CONFIG_PATH=$libs/pkgconfig "$SWIFT" build -c release --product onetun --scratch-path "$scratch" \
    --static-swift-stdlib -Xswiftc -Xclang-linker -Xswiftc -static-libgcc -Xlinker -z -Xlinker now
# The product, .build/dist/onetun: without debug information, symbol table or the compilers' .comment.
binary=$scratch/onetun
strip --strip-all --remove-section=.comment -o "$binary" "$scratch/release/onetun"

# Only the C library may be left: a shared library found here is one the target machine may not have.
needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | paste -sd ' ')
for lib in $needed; do
    case $lib in
    libc.so.* | libm.so.* | ld-linux*.so.*) ;;
    *) fail "$binary needs $lib; only glibc's libraries may remain (needed: $needed)" ;;
    esac
done

version=$("$binary" --version)
arch=$(uname -m)
name=onetun-$version-linux-$arch
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022
bash scripts/install-files.sh "$binary" "$stage/$name" /usr/local
install -D -m 644 README.md "$stage/$name/share/doc/onetun/README.md"
# Fixed owner, order and times (the last commit's, when there is a git history): the tarball changes only
# when its files do.
mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -C "$stage" -cf - "$name" \
    | gzip -9n >"$name.tar.gz"
echo "$name.tar.gz: $binary ($(stat -c %s "$binary") bytes; needs $needed)"
