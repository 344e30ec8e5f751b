"""`ansible-galaxy collection build` gives a tarball that installs and works."""

import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, check=True, **kwargs)


def test_tarball_installs_and_its_roles_and_playbooks_load(tmp_path):
    run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(REPO)])
    tarball, = tmp_path.glob("blackroad-infra-*.tar.gz")
    listing = run(["tar", "tzf", str(tarball)]).stdout.splitlines()
    assert "roles/docker/meta/argument_specs.yml" in listing
    assert not [name for name in listing if name.startswith((".venv", ".cache", ".ansible/", "molecule/"))]

    # Only the installed copy and the collections bundled with ansible are
    # visible: not this checkout, not the repository's ansible.cfg.
    installed = tmp_path / "collections"
    bundled = run(["python3", "-c", "import ansible_collections, os; print(os.path.dirname(ansible_collections.__path__[0]))"]).stdout.strip()
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(config), ANSIBLE_COLLECTIONS_PATH=f"{installed}:{bundled}")
    run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "-p", str(installed), str(tarball)],
        env=env, cwd=tmp_path)
    assert (installed / "ansible_collections" / "blackroad" / "infra" / "MANIFEST.json").is_file()
    for role in sorted(path.name for path in (REPO / "roles").iterdir()):
        doc = run(["ansible-doc", "-t", "role", f"blackroad.infra.{role}"], env=env, cwd=tmp_path).stdout
        assert str(installed) in doc
        assert "Options" in doc
    modules = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py"))
    assert "cloudflare_dns_records" in modules
    for module in modules:
        doc = run(["ansible-doc", "-t", "module", f"blackroad.infra.{module}"], env=env, cwd=tmp_path).stdout
        assert str(installed) in doc
        assert "EXAMPLES" in doc and "RETURN VALUES" in doc
    doc = run(["ansible-doc", "-t", "filter", "blackroad.infra.cloudflare_plan"], env=env, cwd=tmp_path).stdout
    assert "desired" in doc
    doc = run(["ansible-doc", "-t", "inventory", "blackroad.infra.tailscale"], env=env, cwd=tmp_path).stdout
    assert str(installed) in doc and "host_key" in doc
    syntax = run(["ansible-playbook", "--syntax-check", "-i", "localhost,", "blackroad.infra.site"], env=env, cwd=tmp_path)
    assert f"playbook: {installed}/ansible_collections/blackroad/infra/playbooks/site.yml" in syntax.stdout
