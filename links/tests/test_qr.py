"""QR codes as the pages show them (links.qr): read back by zxing-cpp's reader, they give the text encoded."""

from __future__ import annotations

import re
import uuid

import zxingcpp

from links.qr import qr_svg


def read_qr_svg(svg: str, pixels_per_module: int = 4) -> str:
    """The text of a QR code drawn by qr_svg: its path's dark runs painted onto a bitmap, read by zxing-cpp."""
    scale = int(re.search(r'transform="scale\((\d+)\)"', svg).group(1))
    side = int(re.search(r'viewBox="0 0 (\d+) ', svg).group(1)) // scale
    rows = [bytearray(b"\xff" * side) for _ in range(side)]
    for x, y, length in re.findall(r"M(\d+) (\d+)\.5h(\d+)", re.search(r' d="([^"]*)"', svg).group(1)):
        rows[int(y)][int(x) : int(x) + int(length)] = b"\x00" * int(length)
    bitmap = b"".join(
        bytes(value for value in row for _ in range(pixels_per_module)) * pixels_per_module for row in rows
    )
    size = side * pixels_per_module
    barcode = zxingcpp.read_barcode(memoryview(bitmap).cast("B", (size, size)))
    assert barcode is not None, "no QR code found"
    assert barcode.ec_level == "M"  # 15 % of the code may be scuffed or covered and it still reads
    return barcode.text


def test_a_pass_id_reads_back_from_its_qr_code():
    for _ in range(50):
        pass_id = str(uuid.uuid4())
        svg = qr_svg(pass_id, scale=6, title="QR code of your pass")
        assert read_qr_svg(svg) == pass_id
        assert svg.startswith('<svg viewBox="0 0 198 198" class="qr-code"><title>QR code of your pass</title>')


def test_a_long_otpauth_address_reads_back_and_the_title_is_escaped():
    url = (
        "otpauth://totp/SmartPass%20Portal:laura%40example.is?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        "&algorithm=SHA1&digits=6&period=30&issuer=SmartPass%20Portal"
    )
    svg = qr_svg(url, scale=5, title='Set-up <QR> "code"')
    assert read_qr_svg(svg) == url
    assert "<title>Set-up &lt;QR&gt; &quot;code&quot;</title>" in svg and "<QR>" not in svg
