#!/usr/bin/env bash
# Run ansible-test sanity. ansible-test needs the collection at
# .../ansible_collections/blackroad/infra and resolves a symlinked cwd, so it
# runs on a fresh copy of the files git knows about (tracked and new).
set -euo pipefail
cd "$(dirname "$0")/.."

# ansible-test bootstraps pip with a script from a host we cannot reach; give
# it ours under the name it looks for (the pip version it pins).
pip_version=$(python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])
PY
)
mkdir -p ~/.ansible/test/cache
cp scripts/ansible_test_get_pip.py ~/.ansible/test/cache/get_pip_"${pip_version//./_}".py
root=.cache/sanity/ansible_collections/blackroad/infra
rm -rf "$root"
mkdir -p "$root"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$root"
cd "$root"
# ansible-test lists a collection's files through git.
git init -q && git add -A
ansible-test sanity --python 3.11 --color no "$@"
