#!/usr/bin/env bash
# Make a new API key for the edge, or print the hash of one you have.
#
#   scripts/edge-api-key.sh new <id> <user> [file]   # a new key, written to a 0600 file
#   scripts/edge-api-key.sh hash [file]              # the SHA-256 of a key (from a file or stdin)
#
# `new` writes the key to a file only you can read (default ./<id>.key) and
# prints the edge_api_keys entry to paste into the inventory: the key's
# SHA-256, never the key. Hand the file to the key's user, then delete it.
# Keys are 32 random bytes, so a plain SHA-256 is enough to store them
# (docs/edge.md#rotate-an-api-key).
set -euo pipefail

usage() { echo "usage: $0 new <id> <user> [file] | hash [file]" >&2; exit 2; }

hash_of() { python3 -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read().strip()).hexdigest())'; }

case ${1:-} in
  new)
    [ $# -ge 3 ] || usage
    id=$2 user=$3 file=${4:-./$2.key}
    [[ $id =~ ^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$ ]] || { echo "id: 1-64 letters, digits, '.', '_', '@' or '-'" >&2; exit 2; }
    [ ! -e "$file" ] || { echo "$file exists; not overwriting a key" >&2; exit 1; }
    (umask 077 && python3 -c 'import secrets, sys; sys.stdout.write("brk_" + secrets.token_urlsafe(32))' >"$file")
    digest=$(hash_of <"$file")
    echo "# key written to $file (mode 0600); add this to edge_api_keys and run playbooks/edge.yml:"
    printf -- '- id: %s\n  user: %s\n  sha256: "%s"\n' "$id" "$user" "$digest"
    ;;
  hash)
    if [ $# -ge 2 ]; then hash_of <"$2"; else hash_of; fi
    ;;
  *)
    usage
    ;;
esac
