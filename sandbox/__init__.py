"""A local stand-in for the SmartPages REST API ("the sandbox"): `server` runs it, `data` makes its templates.

Tests, `make run` and the benchmarks use it; the production image leaves this package out.
"""

from .data import DEMO_TEMPLATE_ID, HOSTILE_TEMPLATE_ID, HOSTILE_TOTAL_ITEMS, HOSTILE_UNREADABLE_ID
from .server import Faults, SmartPagesSandbox

__all__ = [
    "DEMO_TEMPLATE_ID",
    "HOSTILE_TEMPLATE_ID",
    "HOSTILE_TOTAL_ITEMS",
    "HOSTILE_UNREADABLE_ID",
    "Faults",
    "SmartPagesSandbox",
]
