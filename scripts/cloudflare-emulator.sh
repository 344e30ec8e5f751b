#!/usr/bin/env bash
# Run the local Cloudflare API emulator for the lab, in the background.
#
#   scripts/cloudflare-emulator.sh start   # idempotent; prints the env to use
#   scripts/cloudflare-emulator.sh stop
#   scripts/cloudflare-emulator.sh env     # CLOUDFLARE_BASE_URL / CLOUDFLARE_API_TOKEN lines
#
# The lab account is seeded like the BlackRoad account
# (tests/fixtures/cloudflare/blackroad_account.json) the first time; after that
# its state lives in .cache/lab/cloudflare/state.json and survives restarts.
# The token is generated once into a 0600 file, never passed on a command line.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dir=${CLOUDFLARE_EMULATOR_DIR:-$here/.cache/lab/cloudflare}
port=${CLOUDFLARE_EMULATOR_PORT:-8787}
python=$here/.venv/bin/python
url=http://127.0.0.1:$port/client/v4

running() {
  [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

print_env() {
  echo "CLOUDFLARE_BASE_URL=$url"
  echo "CLOUDFLARE_API_TOKEN_FILE=$dir/token"
}

case ${1:-} in
  start)
    if running; then
      print_env
      exit 0
    fi
    mkdir -p "$dir"
    chmod 700 "$dir"
    if [ ! -s "$dir/token" ]; then
      (umask 077 && "$python" -c 'import secrets; print("lab-" + secrets.token_hex(20))' >"$dir/token")
    fi
    seed=()
    [ -f "$dir/state.json" ] || seed=(--seed "$here/tests/fixtures/cloudflare/blackroad_account.json")
    PYTHONPATH=$here/emulator setsid nohup "$python" -m cloudflare_emulator --listen "127.0.0.1:$port" \
      --token-file "$dir/token" --state-file "$dir/state.json" "${seed[@]}" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 50); do
      grep -q "listening on" "$dir/log" 2>/dev/null && break
      running || { cat "$dir/log" >&2; exit 1; }
      sleep 0.2
    done
    grep -q "listening on" "$dir/log" || { echo "cloudflare-emulator did not start; see $dir/log" >&2; exit 1; }
    print_env
    ;;
  stop)
    if running; then
      kill "$(cat "$dir/pid")"
    fi
    rm -f "$dir/pid"
    ;;
  env)
    print_env
    ;;
  *)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
