#!/usr/bin/env bash
# sign-macos.sh IDENTITY [FILE]: codesign the library (default
# build/libcodervpn.dylib) with the hardened runtime and a secure timestamp,
# then verify the signature. IDENTITY is a "Developer ID Application: ..."
# name or hash from `security find-identity -v -p codesigning`.
set -euo pipefail
if [ $# -lt 1 ]; then
	echo "usage: $0 IDENTITY [build/libcodervpn.dylib]" >&2
	exit 2
fi
identity=$1
file=${2:-build/libcodervpn.dylib}
[ -f "$file" ] || { echo "$0: $file does not exist: run 'make dylib' first" >&2; exit 1; }
codesign --force --options runtime --timestamp --sign "$identity" "$file"
codesign --verify --strict --verbose=2 "$file"
# The embedded Info.plist the host reads after verifying the signature:
otool -s __TEXT __info_plist "$file" >/dev/null
echo "signed $file"
