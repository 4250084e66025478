"""The libvirt driver's screenshot conversion: virDomainScreenshot's PPM to PNG (Pillow)."""

from __future__ import annotations

import io

from PIL import Image

from kubevisor.drivers.libvirt import display


def test_a_ppm_frame_becomes_the_same_pixels_as_png() -> None:
    # 2x1 binary PPM (P6), as QEMU's screendump writes it: a red pixel, then a blue one.
    ppm = b"P6\n2 1\n255\n" + bytes([255, 0, 0, 0, 0, 255])
    png = display.png(ppm)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (2, 1)
        assert [image.getpixel((0, 0)), image.getpixel((1, 0))] == [(255, 0, 0), (0, 0, 255)]
