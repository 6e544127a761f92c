#!/usr/bin/env bash
# Rebuilds third_party/go-sdk: the packages of the official MCP Go SDK that
# this module uses, at the version in third_party/go-sdk/VERSION (or the one
# given), with third_party/go-sdk.patch applied (why: third_party/README.md),
# and points go.mod's require and replace at that version. The replace names
# the version, so a require moved by hand without this script stops using
# the copy, and TestSDKDecodesInPlace fails.
#
#   scripts/vendor-go-sdk.sh            # the version in third_party/go-sdk/VERSION
#   scripts/vendor-go-sdk.sh v1.9.0     # move to another version
#   scripts/vendor-go-sdk.sh --diff     # rewrite the patch from an edited copy
#
# Then: go mod tidy, and go test ./internal/gateway/...
#
# To change the patch, edit the copy, run --diff (the copy's difference
# from the SDK's files, as the patch has it), then the script without it:
# it applies the new patch, runs the SDK's tests and writes the copy, which
# must come out as edited.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=third_party/go-sdk
previous=$(cat "$dest/VERSION" 2>/dev/null || true)
diffmode=
if [ "${1:-}" = --diff ]; then
	diffmode=1
	shift
fi
version=${1:-$previous}
src=$(go mod download -json "github.com/modelcontextprotocol/go-sdk@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "vendor-go-sdk: cannot download go-sdk $version" >&2; exit 1; }

if [ -n "$diffmode" ]; then
	[ "$version" = "$previous" ] || { echo "vendor-go-sdk: --diff is against the copy's version ($previous)" >&2; exit 1; }
	(cd "$dest" && find . -name '*.go' | sed 's|^\./||' | LC_ALL=C sort) | while read -r f; do
		diff -u -N --label "a/$f" --label "b/$f" "$src/$f" "$dest/$f" || [ $? -eq 1 ] # -N: a file the patch adds
	done > third_party/go-sdk.patch.new
	mv third_party/go-sdk.patch.new third_party/go-sdk.patch
	echo "vendor-go-sdk: third_party/go-sdk.patch is $dest's difference from go-sdk $version"
	exit 0
fi

# The packages this module reaches (directly or through the SDK itself).
pkgs="auth internal/authutil internal/json internal/jsonrpc2 internal/mcpgodebug internal/util internal/xcontext jsonrpc mcp oauthex"

# The SDK's own tests, on the whole patched module, before it is trimmed.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
chmod -R u+w "$work"
patch -s -p1 --fuzz=0 --no-backup-if-mismatch -d "$work" < third_party/go-sdk.patch
(cd "$work" && go test ./internal/json ./internal/jsonrpc2 ./jsonrpc ./mcp) ||
	{ echo "vendor-go-sdk: the SDK's tests fail with the patch applied" >&2; exit 1; }

rm -rf "$dest"
mkdir -p "$dest"
cp "$src/LICENSE" "$src/go.mod" "$src/go.sum" "$dest/"
for p in $pkgs; do
	mkdir -p "$dest/$p"
	find "$src/$p" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$dest/$p/" \;
done
chmod -R u+w "$dest"
patch -s -p1 --fuzz=0 --no-backup-if-mismatch -d "$dest" < third_party/go-sdk.patch
echo "$version" > "$dest/VERSION"
mod=github.com/modelcontextprotocol/go-sdk
go mod edit -require="$mod@$version" -dropreplace="$mod" ${previous:+-dropreplace="$mod@$previous"} -replace="$mod@$version=./$dest"
echo "vendor-go-sdk: $dest is go-sdk $version with third_party/go-sdk.patch"
