#!/usr/bin/env bash
# Run ansible-test sanity. ansible-test needs the collection at
# .../ansible_collections/blackroad/infra and resolves a symlinked cwd, so it
# runs on a fresh copy of the files git knows about (tracked and new).
set -euo pipefail
cd "$(dirname "$0")/.."
root=.cache/sanity/ansible_collections/blackroad/infra
rm -rf "$root"
mkdir -p "$root"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$root"
cd "$root"
ansible-test sanity --python 3.11 --color no "$@"
