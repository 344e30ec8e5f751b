"""API calls and wall time of the Cloudflare modules, written into docs/benchmarks.md.

    .venv/bin/python scripts/benchmark_cloudflare.py [--records 1000] [--entries 10000]

Each scenario is one `ansible-playbook` run against the local emulator (a
fresh one per module), counted from the emulator's own request log. The same
records are then converged with community.general.cloudflare_dns, pointed at
the emulator, for comparison. The script exits non-zero when a figure misses
its target (docs/benchmarks.md lists them), so a regression shows.
"""

import argparse
import datetime
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
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- cloudflare-benchmark:begin -->", "<!-- cloudflare-benchmark:end -->"
ZONE = "bench.example"
# Given by id (CLOUDFLARE_ACCOUNT_ID), as a user who converges often would: a
# name costs one lookup call per task.
ACCOUNT = {"id": "be4c0000000000000000000000000001", "name": "Bench"}

# (scenario, limit on API calls)
TARGETS = {
    "dns no-op": 3,
    "dns 10 changes": 4,
    "kv write from empty": 12,
    "kv no-op": 11,
}


class Emulator:
    def __init__(self, seed):
        self.token = "bench-" + secrets.token_hex(16)
        self.seed_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(seed, self.seed_file)
        self.seed_file.close()
        env = dict(os.environ, PYTHONPATH=str(REPO / "emulator"), CLOUDFLARE_EMULATOR_TOKENS=self.token)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudflare_emulator", "--listen", "127.0.0.1:0", "--seed", self.seed_file.name],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+/client/v4)", line)
        if not match:
            raise SystemExit("emulator did not start: " + line + self.proc.stdout.read())
        self.url = match.group(1)
        self.root = self.url[: -len("/client/v4")]

    def control(self, method, path):
        request = urllib.request.Request(self.root + "/__emulator/" + path, method=method,
                                         headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(request) as response:
            body = response.read()
        return json.loads(body) if body else None

    def requests(self):
        data = self.control("GET", "requests")
        return data.get("result", data) if isinstance(data, dict) else data

    def reset_requests(self):
        self.control("DELETE", "requests")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        os.unlink(self.seed_file.name)


def run_playbook(emulator, playbook, variables, workdir, library=None):
    vars_file = pathlib.Path(workdir) / "vars.json"
    vars_file.write_text(json.dumps(variables))
    env = dict(os.environ, CLOUDFLARE_API_TOKEN=emulator.token, CLOUDFLARE_BASE_URL=emulator.url,
               CLOUDFLARE_ACCOUNT_ID=ACCOUNT["id"],
               CF_BENCH_ENDPOINT=emulator.url, ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    if library:
        env["ANSIBLE_LIBRARY"] = str(library)
    emulator.reset_requests()
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-e", "ansible_connection=local",
         "-e", "ansible_python_interpreter=" + sys.executable, "-e", "@" + str(vars_file), str(playbook)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        violations = emulator.control("GET", "violations")
        raise SystemExit("playbook failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:]
                         + "\ncontract violations: " + json.dumps(violations)[:4000])
    stats = json.loads(proc.stdout)["stats"]["localhost"]
    calls = emulator.requests()
    writes = [c for c in calls if c["method"] != "GET"]
    return dict(calls=len(calls), writes=len(writes), seconds=round(seconds, 1), changed=stats["changed"])


def write_play(path, tasks):
    path.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    return path


def dns_records(count):
    records = []
    for i in range(count):
        kind = i % 5
        name = "host%04d" % i
        if kind == 0:
            records.append(dict(name=name, type="A", content="10.%d.%d.%d" % (i // 65536, i // 256 % 256, i % 256)))
        elif kind == 1:
            records.append(dict(name=name, type="AAAA", content="2001:db8::%x" % i))
        elif kind == 2:
            records.append(dict(name=name, type="CNAME", content="target%d.%s" % (i, ZONE)))
        elif kind == 3:
            records.append(dict(name=name, type="TXT", content="\"v=bench %d\"" % i))
        else:
            records.append(dict(name=name, type="MX", content="mx%d.%s" % (i, ZONE), priority=10))
    return records


def change_ten(records):
    changed = [dict(r) for r in records]
    for i in range(0, 10 * 5, 5):  # ten A records
        changed[i]["content"] = "192.0.2.%d" % (i // 5 + 1)
    return changed


def bench_dns(count, workdir):
    emulator = Emulator({"accounts": [ACCOUNT], "zones": [{"name": ZONE}]})
    try:
        play = write_play(pathlib.Path(workdir) / "dns.json", [{
            "name": "Converge records",
            "blackroad.infra.cloudflare_dns_records": {"zone": ZONE, "records": "{{ records }}"}}])
        records = dns_records(count)
        rows = [
            ("dns from empty", run_playbook(emulator, play, {"records": records}, workdir)),
            ("dns no-op", run_playbook(emulator, play, {"records": records}, workdir)),
            ("dns 10 changes", run_playbook(emulator, play, {"records": change_ten(records)}, workdir)),
        ]
    finally:
        emulator.stop()
    return rows


def bench_community_dns(count, workdir):
    """community.general.cloudflare_dns, one task item per record, against the emulator.

    Its API endpoint is a class constant; a copy with only that constant read
    from the environment runs from a private library directory.
    """
    import ansible_collections.community.general.plugins.modules.cloudflare_dns as original
    source = pathlib.Path(original.__file__).read_text()
    patched = source.replace("cf_api_endpoint = 'https://api.cloudflare.com/client/v4'",
                             "cf_api_endpoint = __import__('os').environ['CF_BENCH_ENDPOINT']")
    if patched == source:
        raise SystemExit("community.general.cloudflare_dns: endpoint constant not found")
    library = pathlib.Path(workdir) / "library"
    library.mkdir(exist_ok=True)
    (library / "community_cloudflare_dns.py").write_text(patched)
    emulator = Emulator({"accounts": [ACCOUNT], "zones": [{"name": ZONE}]})
    task = {"name": "Converge records one by one",
            "community_cloudflare_dns": {
                "zone": ZONE, "record": "{{ item.name }}", "type": "{{ item.type }}",
                "value": "{{ item.content }}", "priority": "{{ item.priority | default(omit) }}",
                "api_token": "{{ lookup('env', 'CLOUDFLARE_API_TOKEN') }}", "state": "present"},
            "loop": "{{ records }}"}
    play = write_play(pathlib.Path(workdir) / "community.json", [task])
    records = dns_records(count)
    try:
        rows = [
            ("community.general from empty", run_playbook(emulator, play, {"records": records}, workdir, library)),
            ("community.general no-op", run_playbook(emulator, play, {"records": records}, workdir, library)),
            ("community.general 10 changes",
             run_playbook(emulator, play, {"records": change_ten(records)}, workdir, library)),
        ]
    finally:
        emulator.stop()
    return rows


def bench_kv(count, workdir):
    emulator = Emulator({"accounts": [ACCOUNT], "kv_namespaces": [{"title": "BENCH"}]})
    entries = dict(("key-%05d" % i, "value %d " % i + "x" * 40) for i in range(count))
    changed = dict(entries)
    for i in range(10):
        changed["key-%05d" % (i * 997 % count)] = "changed %d" % i
    play = write_play(pathlib.Path(workdir) / "kv.json", [{
        "name": "Converge entries",
        "blackroad.infra.cloudflare_kv_entries": {"namespace": "BENCH", "entries": "{{ entries }}"}}])
    try:
        rows = [
            ("kv write from empty", run_playbook(emulator, play, {"entries": entries}, workdir)),
            ("kv no-op", run_playbook(emulator, play, {"entries": entries}, workdir)),
            ("kv 10 changes", run_playbook(emulator, play, {"entries": changed}, workdir)),
        ]
    finally:
        emulator.stop()
    return rows


def render(results, args):
    lines = [
        BEGIN,
        "Produced by `scripts/benchmark_cloudflare.py --records %d --entries %d --community-records %d` on %s "
        "(%s, %d CPUs, Python %s). Calls are HTTP requests the emulator received during the run; seconds are "
        "the wall time of the whole `ansible-playbook` run, start-up included."
        % (args.records, args.entries, args.community_records, datetime.date.today().isoformat(),
           platform.platform(terse=True), os.cpu_count(), platform.python_version()),
        "",
        "| scenario | items | API calls | of them writes | changed tasks | seconds | target (calls) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, items, row in results:
        target = TARGETS.get(name)
        lines.append("| %s | %d | %d | %d | %d | %.1f | %s |" % (
            name, items, row["calls"], row["writes"], row["changed"], row["seconds"],
            "at most %d" % target if target else ""))
    lines.append(END)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--community-records", type=int, default=1000,
                        help="records for the community.general.cloudflare_dns comparison (0 skips it)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        results += [(name, args.records, row) for name, row in bench_dns(args.records, workdir)]
        results += [(name, args.entries, row) for name, row in bench_kv(args.entries, workdir)]
        if args.community_records:
            results += [(name, args.community_records, row)
                        for name, row in bench_community_dns(args.community_records, workdir)]
    table = render(results, args)
    print(table)
    if not args.no_write:
        text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
        start, end = text.index(BEGIN), text.index(END) + len(END)
        DOC.write_text(text[:start] + table + text[end:])
    missed = [(name, row["calls"], TARGETS[name]) for name, _items, row in results
              if name in TARGETS and row["calls"] > TARGETS[name]]
    for name, calls, target in missed:
        print("MISSED: %s made %d calls (target at most %d)" % (name, calls, target), file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
