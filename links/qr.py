"""QR codes as inline SVG: the pass page's code of the Pass ID, and the second-factor set-up code.

zxing-cpp (its writer is zint's) encodes: a pass page is opened once by every holder of a surge, and segno,
pure Python, took ~2.4 ms of CPU per code choosing the best of the eight masks — a sixth of the claim's whole
cost on the web process. zint makes the same choice (the standard's penalty rules) in C++ in ~0.3 ms. The SVG
is written here, in segno's shape (one stroked path, a row's dark runs as horizontal lines), so pages and
their CSS did not change.
"""

from __future__ import annotations

import re

import zxingcpp
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

_DARK_RUN = re.compile(rb"\x00+")  # zxing-cpp's image: a byte per module, 0 dark and 255 light


def qr_svg(text: str, *, scale: int, title: str, border: int = 2) -> SafeString:
    """`text` as a QR code (error correction M): an <svg class="qr-code"> of (size + 2 × border) × scale px."""
    modules = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M").to_image(
        scale=1, add_quiet_zones=False
    )
    height, width = modules.shape
    data = bytes(memoryview(modules))
    lines = []
    for y in range(height):
        row = y * width
        lines.extend(
            f"M{run.start() - row + border} {y + border}.5h{run.end() - run.start()}"
            for run in _DARK_RUN.finditer(data, row, row + width)
        )
    side = (width + 2 * border) * scale
    # Only numbers and the escaped title go into the markup: whatever `text` holds cannot inject any.
    return mark_safe(
        f'<svg viewBox="0 0 {side} {side}" class="qr-code"><title>{escape(title)}</title>'
        f'<path transform="scale({scale})" class="qrline" stroke="#000" d="{"".join(lines)}"/></svg>'
    )
