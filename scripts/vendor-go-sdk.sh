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
#
# Then: go mod tidy, and go test ./internal/gateway/...
set -euo pipefail
cd "$(dirname "$0")/.."
dest=third_party/go-sdk
previous=$(cat "$dest/VERSION" 2>/dev/null || true)
version=${1:-$previous}
src=$(go mod download -json "github.com/modelcontextprotocol/go-sdk@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "vendor-go-sdk: cannot download go-sdk $version" >&2; exit 1; }

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
