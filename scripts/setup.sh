#!/usr/bin/env bash
# Prepare this machine to run the lab and the tests. Safe to re-run: every
# step checks first and does nothing when it is already done.
#   1. a Docker Engine that answers (Debian's docker.io if none is installed)
#   2. debootstrap for the base image; shellcheck and git for the sanity test
#   3. the virtualenv from the pinned requirements (rebuilt when they change)
#   4. the collection importable as blackroad.infra
#   5. the local base image (rebuilt when its recipe changes)
#   6. the Workers' npm packages (workerd among them), from workers/package-lock.json
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null ||
    die "this machine has no apt-get; install $* with your package manager and re-run"
  if [ ! -f /var/lib/apt/periodic/blackroad-updated ] ||
     [ -n "$(find /var/lib/apt/periodic/blackroad-updated -mmin +360)" ]; then
    as_root apt-get update -qq
    as_root mkdir -p /var/lib/apt/periodic && as_root touch /var/lib/apt/periodic/blackroad-updated
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

docker_engine() {
  if ! command -v dockerd >/dev/null; then
    if command -v apt-get >/dev/null; then
      log "installing Debian's docker.io"
      apt_install docker.io
    else
      die "no Docker Engine here: install Docker Engine (https://docs.docker.com/engine/install/) and re-run"
    fi
  fi
  docker info >/dev/null 2>&1 && return 0
  log "starting dockerd"
  if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    as_root systemctl start docker || true
  else
    # No systemd on this machine (a container or sandbox): run the daemon
    # detached, logging to a file, so it outlives this script.
    as_root setsid nohup dockerd >/var/log/blackroad-dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -5 /var/log/blackroad-dockerd.log 2>/dev/null >&2 || true
  die "dockerd did not start (log above); Docker Engine must run on this machine for the lab and tests"
}

virtualenv() {
  local stamp=.venv/.requirements.sha256 want
  want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "creating .venv from requirements/dev.txt"
  python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; python3 -m venv .venv; }
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements/dev.txt
  echo "$want" >"$stamp"
}

collection_link() {
  # ansible and ansible-test find us as blackroad.infra through this link;
  # ansible.cfg points collections_path at .cache/collections.
  local link=.cache/collections/ansible_collections/blackroad/infra
  mkdir -p "$(dirname "$link")"
  [ "$(readlink "$link" 2>/dev/null)" = "$repo" ] || ln -sfn "$repo" "$link"
}

workers_packages() {
  # The Workers are tested in workerd and the lab's edge runs in it; both come
  # from npm, pinned by the lockfile. npm ci starts from an empty
  # node_modules, so the stamp inside it goes when the packages do.
  local stamp=workers/node_modules/.package-lock.sha256 want
  command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }
  want=$(sha256sum workers/package-lock.json | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "installing the Workers' npm packages (workers/package-lock.json)"
  (cd workers && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

command -v python3 >/dev/null || die "python3 (3.11 or newer) is needed"
docker_engine
command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
# ansible-test sanity runs shellcheck on our scripts only when it is installed.
command -v shellcheck >/dev/null || { log "installing shellcheck"; apt_install shellcheck; }
command -v git >/dev/null || { log "installing git"; apt_install git; }
virtualenv
collection_link
workers_packages
images/debian12-systemd/build.sh
log "setup done"
