"""Seed documents: the default lab seed and loading one from a file."""

from __future__ import annotations

import json

from .state import DEFAULT_SEED


def load_seed(path):
    """Return the seed document at ``path``, or the default one when no path is given."""
    if not path:
        return DEFAULT_SEED
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError(f"seed {path} must be a JSON object")
    return doc
