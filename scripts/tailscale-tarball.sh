#!/usr/bin/env bash
# Build tailscale and tailscaled from the tailscale.com Go module and pack them
# the way Tailscale's static release tarballs are laid out, so the tailscale
# role's tarball path is exercised with a real artifact:
#
#   tailscale_<version>_<arch>/{tailscale,tailscaled,systemd/tailscaled.service,systemd/tailscaled.defaults}
#
#   scripts/tailscale-tarball.sh VERSION      prints the tarball's path
#
# A .sha256 file (sha256sum format) is written next to it. The tarball is
# reproducible (sorted names, fixed mtime and owner), so its checksum only
# changes when the binaries do; a second call reuses it.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 VERSION" >&2; exit 2; }
version=${1#v}
here=$(cd "$(dirname "$0")" && pwd)
arch=$(go env GOARCH)
name=tailscale_${version}_${arch}
dist=${BLACKROAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blackroad}/dist/tailscale
tarball=$dist/$name.tgz

if [ -f "$tarball" ] && [ -f "$tarball.sha256" ]; then
  echo "$tarball"
  exit 0
fi
tailscale=$("$here/go-build.sh" tailscale "$version")
tailscaled=$("$here/go-build.sh" tailscaled "$version")

mkdir -p "$dist"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$name/systemd"
install -m 0755 "$tailscale" "$work/$name/tailscale"
install -m 0755 "$tailscaled" "$work/$name/tailscaled"
cat >"$work/$name/systemd/tailscaled.defaults" <<'DEFAULTS'
# Set the port to listen on for incoming VPN packets.
PORT="41641"
# Extra flags you might want to pass to tailscaled.
FLAGS=""
DEFAULTS
cat >"$work/$name/systemd/tailscaled.service" <<'UNIT'
[Unit]
Description=Tailscale node agent
Wants=network-pre.target
After=network-pre.target NetworkManager.service systemd-resolved.service

[Service]
EnvironmentFile=/etc/default/tailscaled
ExecStart=/usr/sbin/tailscaled --state=/var/lib/tailscale/tailscaled.state --socket=/run/tailscale/tailscaled.sock --port=${PORT} $FLAGS
ExecStopPost=/usr/sbin/tailscaled --cleanup
Restart=on-failure
RuntimeDirectory=tailscale
RuntimeDirectoryMode=0755
StateDirectory=tailscale
StateDirectoryMode=0700
CacheDirectory=tailscale
CacheDirectoryMode=0750
Type=notify

[Install]
WantedBy=multi-user.target
UNIT
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - "$name" | gzip -n >"$tarball.partial"
mv "$tarball.partial" "$tarball"
(cd "$dist" && sha256sum "$name.tgz" >"$name.tgz.sha256")
echo "$tarball"
