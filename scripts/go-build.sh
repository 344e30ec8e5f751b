#!/usr/bin/env bash
# Build a pinned Go program from its module into a versioned cache and print
# the binary's path. Re-running with the same version prints the cached path
# at once.
#
#   scripts/go-build.sh NAME VERSION
#   scripts/go-build.sh docker-compose 2.32.4
#
# NAME is a row of scripts/go-programs.tsv (module, package, linker flags).
# The build always goes through a throwaway wrapper module that copies the
# upstream go.mod's `replace` directives: `go install mod@v` refuses modules
# that have them (cloudflared does), and the wrapper works for those without.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 NAME VERSION" >&2; exit 2; }
name=$1 version=${2#v}
here=$(cd "$(dirname "$0")" && pwd)
row=$(awk -F '\t' -v n="$name" '$1 == n' "$here/go-programs.tsv")
[ -n "$row" ] || { echo "go-build: $name is not in scripts/go-programs.tsv" >&2; exit 2; }
IFS=$'\t' read -r _ module package ldflags <<<"$row"
ldflags=${ldflags//\{version\}/$version}
cache=${BLACKROAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blackroad}/go/$name/v$version
out=$cache/$name

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
# Several hosts of one play may ask for the same program at once: one builds,
# the others wait and reuse it.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "go-build: Go is not installed; install Go 1.22 or newer" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
go mod init blackroad.local/build/"$name" >/dev/null 2>&1

upstream=$(go mod download -json "$module@v$version")
upstream_mod=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<<"$upstream")
upstream_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$upstream")
# Upstream's go.sum pins the hashes its own build verified; without it the go
# command asks the checksum database for every dependency, and that database
# does not know some pseudo-versions (headscale's tailsql).
if [ -f "$upstream_dir/go.sum" ]; then cp "$upstream_dir/go.sum" go.sum; chmod u+w go.sum; fi
# A replace that points at a local directory cannot be honoured outside
# upstream's tree: go_mod_replaces.py fails loudly on one.
python3 "$here/go_mod_replaces.py" "$upstream_mod" >>go.mod

go get "$module/$package@v$version" >build.log 2>&1 || { cat build.log >&2; exit 1; }
CGO_ENABLED=${CGO_ENABLED:-0} go build -trimpath -ldflags="-s -w $ldflags" -o "$out.partial" "$module/$package" \
  >>build.log 2>&1 || { cat build.log >&2; exit 1; }
mv "$out.partial" "$out"
echo "$out"
