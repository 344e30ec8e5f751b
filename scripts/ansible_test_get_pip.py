"""Stand-in for the get-pip.py that ansible-test downloads to bootstrap pip.

ansible-test fetches get-pip from its own CI file host, which this kind of
machine cannot reach (only PyPI is). It looks for a cached copy first, so
scripts/sanity.sh puts this file there. It does what get-pip does: run pip,
here the wheel bundled with CPython's ensurepip, to install the pinned pip
that ansible-test asks for from PyPI.
"""

import glob
import os
import sys

import ensurepip

# get-pip's own flags; pip install does not know them.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

wheel = sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))[-1]
sys.path.insert(0, wheel)

from pip._internal.cli.main import main  # noqa: E402  pylint: disable=wrong-import-position

args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
