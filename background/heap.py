"""Garbage collection around large pieces of work."""

import contextlib
import gc


@contextlib.contextmanager
def existing_objects_out_of_gc():
    """Leave the objects that exist now (Django's, the worker's) out of garbage collection while the work
    inside makes and drops its own: otherwise every full collection walks them all again (~25 % of a link
    row's time; 30-80 ms of a 0.5 s template sync, bench/links.py and bench/sync.py)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
