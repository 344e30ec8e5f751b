"""API calls and wall time of playbooks/edge.yml, written into docs/benchmarks.md.

    .venv/bin/python scripts/benchmark_edge.py

The lab's domain map against an emulator seeded like the BlackRoad account
(59 Workers, 16 KV namespaces): the first run, a run that changes nothing,
--check, and one more hostname. Calls are counted from the emulator's own
request log; time is the whole ansible-playbook run, fastest of --repeat.
"""

import argparse
import collections
import copy
import datetime
import hashlib
import json
import os
import pathlib
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from benchmark_cloudflare import DOC, Emulator  # noqa: E402  pylint: disable=wrong-import-position

BEGIN, END = "<!-- edge-benchmark:begin -->", "<!-- edge-benchmark:end -->"
SEED = json.loads((REPO / "tests" / "fixtures" / "cloudflare" / "blackroad_account.json").read_text())
LAB = yaml.safe_load((REPO / "inventory" / "lab" / "group_vars" / "all" / "edge.yml").read_text())
HOSTS = {"pi5-alpha": "100.64.0.1", "pi5-beta": "100.64.0.2", "jetson-prime": "100.64.0.6"}
# Made once: every run must see the same keys and secret, as a user's inventory would.
KEYS = [{"id": "bench-%d" % i, "user": "user-%d" % i, "sha256": hashlib.sha256(secrets.token_bytes(32)).hexdigest()}
        for i in range(3)]
STRIPE_SECRET = "whsec_bench_" + secrets.token_hex(8)


def inventory(workdir, routes):
    inv = pathlib.Path(workdir) / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    hosts = {h: {"tailnet_ipv4": ip} for h, ip in HOSTS.items()}
    hosts["localhost"] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (inv / "group_vars" / "all" / "edge.yml").write_text(yaml.safe_dump({
        "blackroad_zones": LAB["blackroad_zones"], "blackroad_routes": routes, "edge_tunnel": "pi5-alpha",
        "edge_api_keys": KEYS, "edge_stripe_webhook_secret": STRIPE_SECRET}))
    return inv / "hosts.yml"


def edge(emulator, workdir, routes, *flags):
    env = dict(os.environ, CLOUDFLARE_API_TOKEN=emulator.token, CLOUDFLARE_BASE_URL=emulator.url,
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    emulator.reset_requests()
    started = time.monotonic()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory(workdir, routes)),
                           str(REPO / "playbooks" / "edge.yml"), *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit("edge.yml failed:\n" + proc.stdout[-4000:] + proc.stderr[-2000:])
    calls = emulator.requests()
    kinds = collections.Counter(re.sub(r"^/(accounts|zones)/[^/]+", "", c["path"]).split("/")[1] or "/" for c in calls)
    return dict(seconds=seconds, calls=len(calls), writes=sum(c["method"] != "GET" for c in calls),
                changed=json.loads(proc.stdout)["stats"]["localhost"]["changed"], kinds=kinds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each no-op scenario; the fastest counts")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    routes = copy.deepcopy(LAB["blackroad_routes"])
    more = routes + [{"hostname": "docs.blackroad.io", "backend": "pi5-beta", "port": 8002}]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        emulator = Emulator(copy.deepcopy(SEED))
        try:
            rows.append(("--check on the seeded account (predicts the first run)", edge(emulator, workdir, routes, "--check")))
            rows.append(("first run", edge(emulator, workdir, routes)))
            rows.append(("second run, nothing to change", min((edge(emulator, workdir, routes) for _run in range(args.repeat)),
                                                              key=lambda r: r["seconds"])))
            rows.append(("--check, nothing to change", min((edge(emulator, workdir, routes, "--check") for _run in range(args.repeat)),
                                                           key=lambda r: r["seconds"])))
            rows.append(("one more hostname, --check --diff", edge(emulator, workdir, more, "--check", "--diff")))
            rows.append(("one more hostname", edge(emulator, workdir, more)))
        finally:
            emulator.stop()
    lines = ["| scenario | API calls | of which writes | changed tasks | wall time |", "|---|---|---|---|---|"]
    for name, r in rows:
        lines.append("| %s | %d | %d | %d | %.1f s |" % (name, r["calls"], r["writes"], r["changed"], r["seconds"]))
    first = rows[1][1]["kinds"]
    lines.append("")
    lines.append("Calls of the first run by endpoint: " + ", ".join("%s %d" % kv for kv in sorted(first.items())) + ".")
    lines.append("`accounts` are the account lookups, one per task invocation; giving the account id "
                 "(`CLOUDFLARE_ACCOUNT_ID` or `cloudflare_account`) saves them.")
    stamp = "%s, Python %s, %d CPUs" % (datetime.date.today().isoformat(), platform.python_version(), os.cpu_count())
    block = "\n".join([BEGIN, "Measured %s by `scripts/benchmark_edge.py`:" % stamp, ""] + lines + [END])
    print(block)
    if not args.no_write:
        text = DOC.read_text()
        if BEGIN in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n## Edge: playbooks/edge.yml on the lab's domain map\n\n" + block + "\n"
        DOC.write_text(text)


if __name__ == "__main__":
    main()
