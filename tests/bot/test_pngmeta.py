import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.pngmeta import embed_parameters, embed_text, parameters_text, parse_parameters, read_parameters, read_text
from bot.request import GenerationRequest, RefinerSpec, WeightedName


def _png(color=(200, 30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


FULL = GenerationRequest(
    prompt="a red fox, in snow",
    negative_prompt="blurry, low quality",
    model="sdxl",
    width=1216,
    height=832,
    steps=30,
    cfg_scale=6.0,
    scheduler="DPM++ 2M Karras",
    seed=42,
    count=2,
    clip_skip=1,
    vae="sdxl-vae-fp16-fix",
    refiner=RefinerSpec(model="sdxl-refiner", start_percent=80),
    loras=(WeightedName(name="pixel-art", weight=0.8), WeightedName(name="toy-face")),
    embeddings=(WeightedName(name="tiny-embedding", weight=0.5),),
)


def test_parameters_follow_the_a1111_layout():
    """The text has the prompt with LoRA tags, the negative line, then the key: value line."""
    text = parameters_text(FULL, 43)
    prompt, negative, fields = text.split("\n")
    assert prompt == "a red fox, in snow <lora:pixel-art:0.8> <lora:toy-face:1>"
    assert negative == "Negative prompt: blurry, low quality"
    assert fields.startswith("Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 43, Size: 1216x832, Model: sdxl")
    assert "Refiner: sdxl-refiner, Refiner switch at: 0.8, Refiner start step: 24" in fields


def test_parameters_round_trip():
    """Every setting written can be read back."""
    parsed = parse_parameters(parameters_text(FULL, 43, {"Generation": "#5"}))
    assert parsed["prompt"] == FULL.prompt
    assert parsed["negative_prompt"] == FULL.negative_prompt
    assert parsed["loras"] == [("pixel-art", 0.8), ("toy-face", 1.0)]
    assert parsed["fields"] == {
        "Steps": "30",
        "Sampler": "DPM++ 2M Karras",
        "CFG scale": "6",
        "Seed": "43",
        "Size": "1216x832",
        "Model": "sdxl",
        "Refiner": "sdxl-refiner",
        "Refiner switch at": "0.8",
        "Refiner start step": "24",
        "Clip skip": "3",  # A1111's count: CLIP's last layer is 1, SDXL's own 2
        "VAE": "sdxl-vae-fp16-fix",
        "Embeddings": "tiny-embedding:0.5",
        "Batch size": "2",
        "Generation": "#5",
    }


def test_embedded_text_is_read_by_pillow_and_pixels_are_untouched():
    """PIL sees the parameters chunk and decodes the same pixels."""
    original = _png()
    tagged = embed_text(original, "parameters", parameters_text(FULL, 42))
    image = Image.open(io.BytesIO(tagged))
    assert image.text["parameters"] == parameters_text(FULL, 42)
    assert image.tobytes() == Image.open(io.BytesIO(original)).tobytes()


def test_non_latin_prompt_goes_in_an_itxt_chunk():
    """A prompt outside Latin-1 survives (UTF-8 iTXt)."""
    request = GenerationRequest(prompt="狐狸 in the snow 🦊", model="tiny", width=128, height=128, seed=1)
    tagged = embed_text(_png(), "parameters", parameters_text(request, 1))
    assert b"iTXt" in tagged
    assert Image.open(io.BytesIO(tagged)).text["parameters"].startswith("狐狸 in the snow 🦊")
    assert read_text(tagged)["parameters"].startswith("狐狸")


def test_not_a_png_is_refused():
    with pytest.raises(ValueError, match="not a PNG"):
        embed_text(b"GIF89a....", "parameters", "x")


@given(
    prompt=st.text(min_size=2, max_size=200).filter(lambda s: s.strip() and "\n" not in s and "<lora:" not in s),
    negative=st.one_of(st.none(), st.text(min_size=1, max_size=100).filter(lambda s: "\n" not in s and s.strip())),
    seed=st.integers(1, 2**63 - 1),
)
def test_any_prompt_round_trips(prompt, negative, seed):
    """Whatever the prompt, the text chunk gives back prompt, negative and seed."""
    request = GenerationRequest(prompt=prompt, negative_prompt=negative, model="tiny", width=128, height=128)
    tagged = embed_text(_png(), "parameters", parameters_text(request, seed))
    parsed = parse_parameters(read_text(tagged)["parameters"])
    assert parsed["prompt"] == prompt.strip()
    assert parsed["negative_prompt"] == (negative.strip() if negative else None)
    assert parsed["fields"]["Seed"] == str(seed)


def _encoded(kind: str, mode: str = "RGB", **options: object) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, (96, 64), (200, 30, 40, 128)[: len(mode)])
    image.paste((10, 220, 90, 255)[: len(mode)], (10, 10, 50, 40))
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


def _without_jfif(jpeg: bytes) -> bytes:
    assert jpeg[2:4] == b"\xff\xe0"  # Pillow writes the JFIF APP0 segment first
    return jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], "big") :]


def _pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return opened.mode, opened.size, opened.tobytes()


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("jpg", _encoded("JPEG")),
        ("jpg", _without_jfif(_encoded("JPEG"))),  # no JFIF header: the EXIF goes right after the start
        ("webp", _encoded("WEBP", quality=90)),  # simple lossy: made extended (VP8X)
        ("webp", _encoded("WEBP", "RGBA", lossless=True)),  # simple lossless with alpha: the flag set too
        ("webp", _encoded("WEBP", "RGBA", quality=90)),  # extended already (VP8X + ALPH)
    ],
    ids=["jpeg", "jpeg-plain", "webp-lossy", "webp-lossless-alpha", "webp-extended"],
)
def test_a_jpeg_or_webp_gets_the_text_in_exif_and_keeps_every_pixel(fmt, data):
    """The parameters go where A1111 puts them (EXIF UserComment, UTF-16 big-endian); the image decodes
    to the very same pixels, and Pillow, A1111's reader and ours read the text back."""
    text = "a (fox:1.2) in snow, é, 🦊\nNegative prompt: blurry\nSteps: 4, Seed: 7"
    out = embed_parameters(data, fmt, text)
    assert _pixels(out) == _pixels(data)
    with Image.open(io.BytesIO(out)) as opened:
        assert opened.getexif().get_ifd(0x8769)[0x9286] == b"UNICODE\0" + text.encode("utf-16-be")
    assert read_parameters(out) == text


def test_a_png_gets_the_parameters_chunk():
    png = _png()
    assert embed_parameters(png, "png", "a fox") == embed_text(png, "parameters", "a fox")
    assert read_parameters(embed_parameters(png, "png", "a fox")) == "a fox"


def test_text_too_long_for_a_jpeg_segment_is_left_out_not_cut():
    """A JPEG segment holds 64 kB: parameters past it (never ours: prompts stop at 3,000 characters) are left out."""
    jpeg = _encoded("JPEG")
    assert embed_parameters(jpeg, "jpg", "x" * 40_000) == jpeg


@given(st.text(max_size=3000), st.sampled_from(["jpg", "webp"]))
def test_any_text_reads_back_from_a_jpeg_or_webp(text, fmt):
    """Whatever the prompt holds, the text read back is the text written (a lone surrogate, which no
    chat sends, as a question mark; a NUL, which no prompt holds, dropped)."""
    data = _encoded("JPEG") if fmt == "jpg" else _encoded("WEBP", quality=80)
    expected = text.encode("utf-16-be", errors="replace").decode("utf-16-be").replace("\0", "")
    assert read_parameters(embed_parameters(data, fmt, text)) == expected
