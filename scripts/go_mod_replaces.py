"""Print the `replace` directives of a go.mod so a wrapper module can reuse them.

`go install module@version` refuses modules whose go.mod has replace
directives (cloudflared's does); scripts/go-build.sh builds through a
wrapper module instead and appends what this prints to the wrapper's go.mod.
"""

import re
import sys


def replaces(go_mod: str) -> list[str]:
    """Return each replace directive of go_mod as a one-line `replace ...`."""
    text = re.sub(r"//[^\n]*", "", go_mod)
    found = []
    for block in re.findall(r"^replace\s*\((.*?)^\)", text, re.S | re.M):
        found += [line.strip() for line in block.splitlines() if line.strip()]
    found += [m.strip() for m in re.findall(r"^replace\s+([^(\s].*)$", text, re.M)]
    for line in found:
        target = line.split("=>", 1)[1].strip()
        if target.startswith((".", "/")):
            raise ValueError(f"replace points at a local path, which a wrapper cannot use: {line}")
    return [f"replace {line}" for line in found]


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        try:
            lines = replaces(handle.read())
        except ValueError as err:
            print(f"go-build: {err}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
