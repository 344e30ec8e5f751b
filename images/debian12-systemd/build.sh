#!/usr/bin/env bash
# Builds the lab/test base image: Debian 12 with systemd as PID 1 and python3,
# standing in for Raspberry Pi OS (bookworm) and the droplet. Built from
# Debian's archive with debootstrap and `docker import`: nothing is pulled.
#
# The tag is the hash of this recipe, so the image is rebuilt exactly when the
# recipe changes and re-running is a no-op.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=${BLACKROAD_IMAGE_REPO:-blackroad/debian12-systemd}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
tag=$(cat "$here/build.sh" "$here/packages.txt" | sha256sum | cut -c1-12)
image="$repo:$tag"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "image $image is current"
else
  echo "building $image with debootstrap (a few minutes, once per recipe change)"
  root=$(mktemp -d /var/tmp/blackroad-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  include=$(grep -vE '^\s*(#|$)' "$here/packages.txt" | paste -sd, -)
  debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log"; echo "debootstrap failed, full log: $root.log" >&2; exit 1; }
  rm -f "$root.log"

  # A container has no console, no udev and no real hardware clock; these units
  # only fail or wait there. Real hosts are unaffected: this is the image only.
  for unit in getty@tty1.service console-getty.service systemd-udevd.service \
              systemd-udev-trigger.service systemd-firstboot.service \
              systemd-random-seed.service sys-kernel-config.mount; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  # Fresh machine-id per container, as on a freshly flashed SD card.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  # Every container gets its own SSH host keys at first boot, as a freshly
  # flashed Raspberry Pi OS does, instead of sharing the image's.
  rm -f "$root"/etc/ssh/ssh_host_*
  cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
  ln -sf /etc/systemd/system/ssh-host-keys.service "$root/etc/systemd/system/multi-user.target.wants/ssh-host-keys.service"
  # Keep the image small and the apt lists out of it: roles run `apt update`.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  # Empty lists must look stale, or apt's cache_valid_time skips the update.
  touch -d @0 "$root/var/lib/apt/lists"
  # The same sources a Raspberry Pi OS / Debian host has, plus security updates
  # so unattended-upgrades has a security origin to follow.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES

  # systemd stops cleanly on SIGRTMIN+3; `docker import` cannot set
  # STOPSIGNAL, so the lab and Molecule pass stop_signal themselves.
  tar -C "$root" -c . | docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --message "blackroad base image, recipe $tag" \
    - "$image" >/dev/null
  echo "built $image"
fi
docker tag "$image" "$repo:latest"
# Images of earlier recipes are dead weight; one still used by a container stays.
docker images --format '{{.Repository}}:{{.Tag}}' "$repo" |
  grep -vxF -e "$image" -e "$repo:latest" | xargs -r docker rmi >/dev/null 2>&1 || true
