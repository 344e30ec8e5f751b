"""CLI: ``python -m cloudflare_emulator --listen 127.0.0.1:8787 --token-file FILE``."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from .seed import load_seed


def _tokens(token_file):
    """Tokens come from a private file or the environment, never argv (ps shows argv)."""
    tokens = []
    if token_file:
        mode = os.stat(token_file).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            sys.exit(f"cloudflare-emulator: {token_file} must not be readable by group/other (chmod 600)")
        with open(token_file, encoding="utf-8") as fh:
            tokens += [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    env = os.environ.get("CLOUDFLARE_EMULATOR_TOKENS", "")
    tokens += [t.strip() for t in env.split(",") if t.strip()]
    return tokens


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cloudflare_emulator", description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:8787", help="loopback HOST:PORT (port 0 picks a free one)")
    ap.add_argument("--token-file", help="file with one API token per line, mode 0600")
    ap.add_argument("--seed",
                    help="seed document (JSON); default: account BlackRoad, zones blackroad.io and lucidia.earth")
    ap.add_argument("--state-file", help="persist state here after every write (atomic rename) and reload it on start")
    ap.add_argument("--contract-report", action="store_true", help="print the contract coverage table (CONTRACT.md)")
    args = ap.parse_args(argv)

    from .server import ROUTES, Emulator  # noqa: F401  (import here keeps --help instant)
    if args.contract_report:
        from .contract import report
        sys.stdout.write(report([(m, t) for m, t, _rx, _fn in ROUTES]))
        return 0

    tokens = _tokens(args.token_file)
    if not tokens:
        sys.exit("cloudflare-emulator: no token; use --token-file FILE or CLOUDFLARE_EMULATOR_TOKENS")
    host, _sep, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        emu = Emulator(tokens, seed=load_seed(args.seed), state_file=args.state_file)
        httpd = emu.serve(host, int(port))
    except ValueError as exc:
        sys.exit(f"cloudflare-emulator: {exc}")
    real_port = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"cloudflare-emulator listening on http://{shown}:{real_port}/client/v4", flush=True)
    emu.contract.start_loading()
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
