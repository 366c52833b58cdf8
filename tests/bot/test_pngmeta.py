import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.pngmeta import embed_text, parameters_text, parse_parameters, read_text
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
        "Clip skip": "1",
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
