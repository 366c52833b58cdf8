"""Images users send: every refusal is one InvalidOption sentence, and what passes is a clean, upright PNG."""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageCms, PngImagePlugin

from bot.errors import MAX_MESSAGE, InvalidOption
from bot.images import MAX_SIDE, InputImage, check_image

MB = 1024 * 1024
BUDGET = 2048 * 2048
RED, BLUE = (255, 0, 0), (0, 0, 255)


def check(data: bytes, **options: Any) -> InputImage:
    settings: dict[str, Any] = {"option": "image", "max_bytes": 20 * MB, "pixel_budget": BUDGET}
    settings.update(options)
    return check_image(data, **settings)


def encode(image: Image.Image, kind: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **params)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def noise(width: int, height: int, seed: int = 1) -> Image.Image:
    """Pixels that do not compress, so a JPEG of them is long enough to cut in half."""
    stream = hashlib.shake_256(seed.to_bytes(4, "big")).digest(width * height * 3)
    return Image.frombytes("RGB", (width, height), stream)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring `width`×`height` RGB pixels, with a few bytes of IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    )


def refusal(data: bytes, **options: Any) -> str:
    with pytest.raises(InvalidOption) as caught:
        check(data, **options)
    assert caught.value.option == options.get("option", "image")
    return str(caught.value)


def test_a_png_passes_as_an_rgb_png_with_its_hash():
    data = encode(noise(64, 48))
    image = check(data)
    assert (image.width, image.height) == (64, 48)
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
    with decoded(image.data) as out:
        assert (out.mode, out.size) == ("RGB", (64, 48))
        assert out.tobytes() == noise(64, 48).tobytes()


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_jpeg_and_webp_pass_as_png(kind):
    image = check(encode(noise(40, 30), kind))
    assert (image.width, image.height) == (40, 30)
    assert decoded(image.data).mode == "RGB"


def test_a_header_only_bomb_is_refused_without_decoding_it():
    """A few hundred bytes declaring 30000×30000 pixels (2.7 GB decoded) allocate no image at all."""
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 200
    images_before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    try:
        message = refusal(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The sentence names the header's size: the refusal came from reading it, not from a failed decode.
    assert message == "Image is 30000×30000 pixels; the most is 4,194,304 pixels (about 2048×2048)."
    assert peak < 1 * MB
    assert Image.core.get_stats()["new_count"] == images_before  # Pillow allocated no image memory


def test_a_bomb_below_pillows_own_limit_is_refused_by_the_budget():
    """8000×8000 is under Pillow's decompression-bomb limit; the budget refuses it from the header all the same."""
    images_before = Image.core.get_stats()["new_count"]
    assert "8000×8000 pixels" in refusal(png_header_only(8000, 8000))
    assert Image.core.get_stats()["new_count"] == images_before


def test_pillows_bomb_limit_becomes_our_refusal():
    """A budget set above Pillow's limit still refuses, never raises DecompressionBombError."""
    message = refusal(png_header_only(30000, 30000), pixel_budget=10**10, max_side=10**6)
    assert message == "Image has too many pixels to read safely."


def test_a_webp_header_bomb_is_refused_before_pillow_opens_it():
    """Pillow's WebP decoder allocates the canvas on open, so the header is read first."""
    image = encode(Image.new("RGB", (16, 16)), "WEBP", lossless=True)
    assert image[12:16] == b"VP8L"
    bits = (16000 - 1) | (16000 - 1) << 14
    bomb = image[:21] + struct.pack("<I", bits | (struct.unpack_from("<I", image, 21)[0] & ~0x0FFFFFFF)) + image[25:]
    images_before = Image.core.get_stats()["new_count"]
    assert "16000×16000 pixels" in refusal(bomb)
    assert Image.core.get_stats()["new_count"] == images_before


def test_a_jpeg_header_bomb_is_refused_with_its_size():
    """A small JPEG whose frame header declares 60000×50000 pixels."""
    jpeg = encode(Image.new("RGB", (16, 16)), "JPEG")
    frame = jpeg.index(b"\xff\xc0")
    bomb = jpeg[: frame + 5] + struct.pack(">HH", 50000, 60000) + jpeg[frame + 9 :]
    images_before = Image.core.get_stats()["new_count"]
    assert "60000×50000 pixels" in refusal(bomb)
    assert Image.core.get_stats()["new_count"] == images_before


def test_a_side_over_the_limit_is_refused_within_the_budget():
    message = refusal(png_header_only(MAX_SIDE + 1, 8))
    assert message == f"Image is {MAX_SIDE + 1}×8 pixels; a side may be at most {MAX_SIDE} pixels."


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read():
    data = b"\x89PNG\r\n\x1a\n" + bytes(int(25.25 * MB))
    assert refusal(data) == "Image is 25.3 MB; the most is 20 MB."
    # A file just over a limit never reads as equal to it: its size rounds up, the limit down.
    assert refusal(bytes(12 * 1024 + 1), max_bytes=4000) == "Image is 12.1 KB; the most is 3.9 KB."
    assert refusal(bytes(901), max_bytes=900) == "Image is 901 bytes; the most is 900 bytes."


def test_an_empty_file_is_refused():
    assert refusal(b"") == "Image is an empty file."


def test_a_renamed_text_file_is_refused_whatever_its_name():
    """Only the bytes count: a text file saved as cat.png is still text."""
    assert refusal(b"just some notes, saved as cat.png\n") == "Image must be a PNG, JPEG or WebP file."


@pytest.mark.parametrize("kind", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_image_formats_are_refused(kind):
    assert "must be a PNG, JPEG or WebP file" in refusal(encode(noise(16, 16), kind))


def test_svg_is_refused():
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    assert "must be a PNG, JPEG or WebP file" in refusal(svg)


def test_a_truncated_jpeg_is_refused_as_damaged():
    jpeg = encode(noise(256, 256), "JPEG", quality=90)
    assert refusal(jpeg[: len(jpeg) // 2]) == "Image could not be read (damaged or cut off)."


def test_a_png_with_a_broken_chunk_is_refused_as_damaged():
    png = bytearray(encode(noise(32, 32)))
    png[40] ^= 0xFF  # inside IDAT: its CRC no longer matches
    assert refusal(bytes(png)) == "Image could not be read (damaged or cut off)."


def test_the_refusal_names_the_option():
    assert refusal(b"nope", option="mask").startswith("Mask must be")


def test_exif_orientation_is_applied():
    """A phone photo stored sideways with orientation 6 (rotate 90° clockwise) comes out upright."""
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))  # the left half, which is the top once rotated clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    image = check(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert (image.width, image.height) == (20, 40)
    with decoded(image.data) as out:
        assert close(out.getpixel((10, 5)), RED)
        assert close(out.getpixel((10, 35)), BLUE)


def close(pixel: Any, expected: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def test_alpha_is_flattened_onto_white():
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))
    with decoded(check(encode(image)).data) as out:
        assert out.mode == "RGB"
        assert out.getpixel((0, 0)) == (255, 255, 255)
        assert out.getpixel((1, 0)) == RED
        assert out.getpixel((2, 0)) == (127, 127, 127)


def test_a_palette_image_with_a_transparent_colour_is_flattened():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((1, 0), 1)
    with decoded(check(encode(image, transparency=0)).data) as out:
        assert [out.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), RED]


def test_metadata_is_stripped():
    """Text chunks (a prompt, a GPS position), EXIF and the ICC profile never reach the stored file."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "secret prompt")
    info.add_itxt("Comment", "secret comment", zip=True)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    png = encode(noise(16, 16), pnginfo=info, exif=exif.tobytes(), icc_profile=icc)
    jpeg = encode(noise(16, 16), "JPEG", exif=exif.tobytes(), icc_profile=icc)
    for source in (png, jpeg):
        assert b"secret" in source or b"SecretCam" in source
        data = check(source).data
        for marker in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"secret", b"SecretCam"):
            assert marker not in data
        with decoded(data) as out:
            assert not out.info
            assert not out.getexif()


def test_the_same_input_gives_the_same_bytes_and_hash():
    data = encode(noise(32, 32), "JPEG")
    first, second = check(data), check(data)
    assert first == second
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()


def test_the_same_pixels_in_another_wrapping_give_the_same_hash():
    """A PNG with metadata and the bare PNG are one stored input."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a prompt")
    assert check(encode(noise(8, 8), pnginfo=info)).sha256 == check(encode(noise(8, 8))).sha256


def test_a_mask_becomes_single_channel():
    mask = Image.new("RGB", (8, 8), (0, 0, 0))
    mask.paste((255, 255, 255), (0, 0, 4, 8))
    result = check(encode(mask), option="mask", mask=True)
    with decoded(result.data) as out:
        assert out.mode == "L"
        assert (out.getpixel((1, 1)), out.getpixel((6, 6))) == (255, 0)


def test_transparent_parts_of_a_mask_are_kept():
    """White strokes on a transparent layer repaint the strokes only."""
    mask = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (0, 0, 4, 8))
    with decoded(check(encode(mask), option="mask", mask=True).data) as out:
        assert (out.getpixel((1, 1)), out.getpixel((6, 6))) == (255, 0)


def test_a_16_bit_mask_keeps_its_greys():
    mask = Image.new("I;16", (3, 1))
    for x, value in enumerate((65535, 32768, 0)):
        mask.putpixel((x, 0), value)
    with decoded(check(encode(mask), option="mask", mask=True).data) as out:
        assert [out.getpixel((x, 0)) for x in range(3)] == [255, 128, 0]


# What the property test mutates: small valid files of each accepted kind.
VALID = [
    encode(noise(24, 16), "PNG"),
    encode(Image.new("RGBA", (16, 16), (1, 2, 3, 100)), "PNG"),
    encode(noise(24, 16), "JPEG"),
    encode(noise(24, 16), "WEBP"),
    encode(noise(16, 16), "WEBP", lossless=True),
]
PROPERTY_BUDGET = 48 * 48


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid file cut short, with bytes flipped, or both: what a bad upload or an attacker sends."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@given(data=st.one_of(st.binary(max_size=512), mutated()), mask=st.booleans())
def test_any_bytes_give_a_clean_png_or_one_sentence(data: bytes, mask: bool):
    """Whatever arrives, the result is a PNG within the budget or an InvalidOption sentence; nothing else."""
    try:
        image = check(data, option="image", max_bytes=64 * 1024, pixel_budget=PROPERTY_BUDGET, mask=mask)
    except InvalidOption as error:
        message = str(error)
        assert message.startswith("Image ") and message.endswith(".")
        assert len(message) <= MAX_MESSAGE
        assert message.isprintable()
        assert ". " not in message  # one sentence
        return
    with decoded(image.data) as out:
        assert out.size == (image.width, image.height)
        assert out.width * out.height <= PROPERTY_BUDGET
        assert out.mode == ("L" if mask else "RGB")
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
