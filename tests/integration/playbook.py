"""Run a play of module tasks on localhost with ansible-playbook, as a user would."""

import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


class PlayResult:
    def __init__(self, proc, data):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.data = data

    @property
    def output(self):
        return self.stdout + self.stderr

    @property
    def stats(self):
        """{'changed': n, 'failures': n, 'ok': n, ...} for localhost."""
        if self.data is not None:
            return self.data["stats"]["localhost"]
        match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", self.stdout)
        if not match:
            return {}
        ok, changed, unreachable, failed = (int(x) for x in match.groups())
        return {"ok": ok, "changed": changed, "unreachable": unreachable, "failures": failed}

    @property
    def changed(self):
        return self.stats.get("changed", 0)

    @property
    def results(self):
        """Each task's result for localhost, in order (json callback only)."""
        out = []
        for play in self.data["plays"]:
            for task in play["tasks"]:
                result = task["hosts"].get("localhost")
                if result is not None:
                    result = dict(result, task=task["task"]["name"])
                    out.append(result)
        return out

    def result(self, name):
        """The result of the task called ``name``."""
        for result in self.results:
            if result["task"] == name:
                return result
        raise KeyError(name)


def run_play(tmp_path, tasks, env, check=False, diff=False, verbose=0, json_output=True, extra_vars=None,
             playbook=None, inventory="localhost,"):
    """Run ``tasks`` (a list of task dicts) in one play on localhost.

    ``env`` adds environment variables (the emulator's token and URL). With
    ``json_output`` the json callback is used and per-task results are
    available; otherwise the default callback's text is kept (for -vvv checks).
    """
    if playbook is None:
        playbook = tmp_path / "play.yml"
        playbook.write_text(yaml.safe_dump([{
            "name": "Test play",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": tasks,
        }], sort_keys=False))
    args = [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "-e", "ansible_connection=local",
            "-e", "ansible_python_interpreter=" + sys.executable, str(playbook)]
    if check:
        args.append("--check")
    if diff:
        args.append("--diff")
    if verbose:
        args.append("-" + "v" * verbose)
    if extra_vars:
        args += ["-e", json.dumps(extra_vars)]
    full_env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="0")
    full_env.update(env)
    if json_output:
        full_env["ANSIBLE_STDOUT_CALLBACK"] = "json"
    proc = subprocess.run(args, cwd=REPO, env=full_env, capture_output=True, text=True, check=False)
    data = None
    if json_output:
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("ansible-playbook printed no JSON:\n" + proc.stdout + proc.stderr)
    return PlayResult(proc, data)
