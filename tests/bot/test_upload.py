import io
import os

from PIL import Image

from bot.upload import fit_upload


def _noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_file_is_sent_unchanged():
    png = _noise_png(32)
    assert fit_upload(png, "ib-1-0.png", len(png)) == (png, "ib-1-0.png")


def test_large_file_becomes_a_webp_under_the_limit():
    png = _noise_png(256)
    data, name = fit_upload(png, "ib-1-0.png", 60_000)
    assert name == "ib-1-0.webp"
    assert len(data) <= 60_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        assert image.size[0] <= 256


def test_tiny_limit_shrinks_the_picture():
    png = _noise_png(256)
    data, _ = fit_upload(png, "x.png", 4_000)
    assert len(data) <= 4_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.size[0] < 256
