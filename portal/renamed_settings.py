"""Settings read under a new name that still answer to their old one for a release, with a DeprecationWarning.

Used by portal/settings.py before Django is set up: plain Python, the environment only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence


def seconds_setting(
    name: str, *, old_names: Sequence[str], default: float, environ: Mapping[str, str] | None = None
) -> float:
    """`name` from the environment; else the first of `old_names` that is set, with a DeprecationWarning that
    names the new setting; else `default`. Seconds, as a float."""
    environ = os.environ if environ is None else environ
    if environ.get(name, "") != "":
        return float(environ[name])
    for old in old_names:
        if environ.get(old, "") != "":
            warnings.warn(
                f"{old} is deprecated and will be removed in the next release: set {name} instead "
                "(one value for every kind of background work).",
                DeprecationWarning,
                stacklevel=2,
            )
            return float(environ[old])
    return default
