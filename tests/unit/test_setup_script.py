"""scripts/setup.sh on a machine with neither Docker nor apt says what to install."""

import os
import pathlib
import shutil
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_no_docker_and_no_apt_gives_one_clear_sentence(tmp_path):
    # A PATH with the basic tools but no dockerd, docker or apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python3", "ps", "id", "dirname", "cat", "sha256sum", "cut", "printf", "seq", "sleep"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "setup.sh")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "setup: no Docker Engine here: install Docker Engine "
        "(https://docs.docker.com/engine/install/) and re-run"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / ".venv")
