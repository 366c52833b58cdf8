"""Table tests of the option parser: what a user types and what they get back."""

import re
from importlib import resources
from pathlib import Path

import pytest

import bot.options
from bot.catalog import Catalog, load_catalog
from bot.errors import InvalidOption
from bot.options import (
    OPTIONS,
    SDXL_BUCKETS,
    Defaults,
    Limits,
    Parsed,
    parse_options,
    parse_text,
    size_for_ratio,
)
from bot.request import MAX_SEED, GenerationRequest, RefinerSpec, WeightedName


def catalog() -> Catalog:
    """The shipped catalog plus the test entries (film-grain, FLUX, SD 1.5, wrong entries)."""
    shipped = resources.files("bot").joinpath("models.toml").read_text(encoding="utf-8")
    extra = Path(__file__).with_name("options_catalog.toml").read_text(encoding="utf-8")
    return Catalog.from_toml(shipped + "\n" + extra)


CATALOG = catalog()
SHIPPED = load_catalog()
DEFAULTS = Defaults(model="sdxl")
LIMITS = Limits(pixel_budget=4 * 1024 * 1024)


def text(line: str, defaults: Defaults = DEFAULTS, limits: Limits = LIMITS, cat: Catalog = CATALOG) -> Parsed:
    return parse_text(line, catalog=cat, defaults=defaults, limits=limits)


def options(mapping: dict, defaults: Defaults = DEFAULTS, limits: Limits = LIMITS) -> Parsed:
    return parse_options(mapping, catalog=CATALOG, defaults=defaults, limits=limits)


def error_of(line: str, **kwargs) -> str:
    with pytest.raises(InvalidOption) as caught:
        text(line, **kwargs)
    return str(caught.value)


# ---------------------------------------------------------------------------
# The full example


def test_full_example():
    """The brief's example line resolves every field."""
    parsed = text(
        "a red fox --seed 42 --steps 30 --refiner 90 --lora pixel-art:0.8, film-grain --no blurry "
        '--ar 16:9 --cfg 6 --sampler "DPM++ 2M Karras" --n 2 --model sdxl'
    )
    assert parsed.request == GenerationRequest(
        prompt="a red fox",
        negative_prompt="blurry",
        model="sdxl",
        width=1344,
        height=768,
        steps=30,
        cfg_scale=6.0,
        scheduler="DPM++ 2M Karras",
        seed=42,
        count=2,
        clip_skip=0,
        vae=None,
        refiner=RefinerSpec(model="sdxl-refiner", start_percent=90),
        loras=(WeightedName(name="pixel-art", weight=0.8), WeightedName(name="film-grain", weight=1.0)),
        embeddings=(),
        output_format="png",
    )
    assert parsed.warnings == ("LoRA pixel-art works best with 'pixel art' in the prompt.",)


def test_full_example_needs_film_grain_in_the_catalog():
    """Against the shipped catalog the same line names the missing LoRA."""
    assert error_of("a red fox --lora pixel-art:0.8, film-grain", cat=SHIPPED) == (
        "--lora 'film-grain' is not in the catalog (known: pixel-art, tiny-lora, tiny-lora-2, toy-face)."
    )


def test_discord_mapping_equals_text():
    """A typed mapping and the same options as text build the same request."""
    typed = options(
        {
            "prompt": "a red fox",
            "negative": "blurry",
            "seed": 42,
            "steps": 30,
            "refiner": 90,
            "lora": "pixel-art:0.8, film-grain",
            "model": "sdxl",
            "size": None,
            "ar": "16:9",
            "cfg": 6.0,
            "scheduler": "DPM++ 2M Karras",
            "count": 2,
            "clip_skip": 1,
            "vae": "sdxl-vae-fp16-fix",
            "embedding": "tiny-embedding",
            "format": "png",
        }
    )
    typed_text = text(
        "a red fox --no blurry --seed 42 --steps 30 --refiner 90 --lora pixel-art:0.8, film-grain "
        "--model sdxl --ar 16:9 --cfg 6 --sampler DPM++ 2M Karras --n 2 --clip-skip 1 "
        "--vae sdxl-vae-fp16-fix --embedding tiny-embedding --format png"
    )
    assert typed == typed_text
    assert typed.request.clip_skip == 1
    assert typed.request.embeddings == (WeightedName(name="tiny-embedding", weight=1.0),)


def test_plain_prompt_gets_the_model_defaults():
    """A bare prompt resolves to the default model's catalog values and a random seed."""
    request = text("a red fox").request
    assert (request.model, request.width, request.height) == ("sdxl", 1024, 1024)
    assert (request.steps, request.cfg_scale, request.scheduler) == (30, 7.0, "DPM++ 2M Karras")
    assert (request.seed, request.count, request.refiner, request.output_format) == (None, 1, None, "png")


# ---------------------------------------------------------------------------
# Every flag and alias


@pytest.mark.parametrize(
    ("flags", "field", "expected"),
    [
        ("--seed 42", "seed", 42),
        ("--seed=42", "seed", 42),
        ("--SEED 42", "seed", 42),
        ("—seed 42", "seed", 42),
        (f"--seed {MAX_SEED}", "seed", MAX_SEED),
        ("--steps 25", "steps", 25),
        ("--refiner 85", "refiner", RefinerSpec(model="sdxl-refiner", start_percent=85)),
        ("--refiner 88%", "refiner", RefinerSpec(model="sdxl-refiner", start_percent=88)),
        ("--refiner 0", "refiner", None),
        ("--refiner off", "refiner", None),
        ("--lora pixel-art", "loras", (WeightedName(name="pixel-art", weight=1.0),)),
        (
            "--lora Pixel-Art:0.8,toy-face:-1.5",
            "loras",
            (WeightedName(name="pixel-art", weight=0.8), WeightedName(name="toy-face", weight=-1.5)),
        ),
        ("--lora pixel-art : .5", "loras", (WeightedName(name="pixel-art", weight=0.5),)),
        ("--no blurry, text", "negative_prompt", "blurry, text"),
        ("--negative blurry", "negative_prompt", "blurry"),
        ("--ar 16:9", "size", (1344, 768)),
        ("--ar 9:16", "size", (768, 1344)),
        ("--ar 1:1", "size", (1024, 1024)),
        ("--ar 4:3", "size", (1152, 896)),
        ("--ar 3:2", "size", (1216, 832)),
        ("--ar 2:3", "size", (832, 1216)),
        ("--ar 21:9", "size", (1536, 640)),
        ("--ar 2.39:1", "size", (1536, 640)),
        ("--size 1216x832", "size", (1216, 832)),
        ("--size 640X1536", "size", (640, 1536)),
        ("--size 832×1216", "size", (832, 1216)),
        ("--size 2048x128", "size", (2048, 128)),
        ("--size 1024*768", "size", (1024, 768)),
        ("--size 1024 x 768", "size", (1024, 768)),
        ("--cfg 6", "cfg_scale", 6.0),
        ("--cfg 4.5", "cfg_scale", 4.5),
        ("--cfg 0", "cfg_scale", 0.0),
        ("--sampler euler_a", "scheduler", "Euler a"),
        ("--scheduler dpm++ 2m sde karras", "scheduler", "DPM++ 2M SDE Karras"),
        ("--n 3", "count", 3),
        ("--count 2", "count", 2),
        ("--model tiny", "model", "tiny"),
        ("--model SDXL-Turbo", "model", "sdxl-turbo"),
        ("--vae sdxl-vae-fp16-fix", "vae", "sdxl-vae-fp16-fix"),
        ("--vae default", "vae", None),
        ("--clip-skip 2", "clip_skip", 2),
        ("--clip_skip 1", "clip_skip", 1),
        ("--embedding tiny-embedding:0.5", "embeddings", (WeightedName(name="tiny-embedding", weight=0.5),)),
        ("--format jpeg", "output_format", "jpg"),
        ("--format WEBP", "output_format", "webp"),
        ("--format .png", "output_format", "png"),
        ("--tile", "tiling", True),  # alone: on, as Midjourney's --tile
        ("--tile --seed 3", "tiling", True),
        ("--tiling on", "tiling", True),
        ("--tile off", "tiling", False),
        ("--variation 0.2", "variation_strength", 0.2),
        ("--var 0.25 --variation-seed 42", "variation_seed", 42),
        ("--subseed-strength 1 --subseed 9", "variation_strength", 1.0),
    ],
)
def test_flag(flags, field, expected):
    """Each flag (and alias) sets its field."""
    request = text(f"a red fox {flags}").request
    value = (request.width, request.height) if field == "size" else getattr(request, field)
    assert value == expected
    assert request.prompt == "a red fox"


@pytest.mark.parametrize(
    ("model", "ar", "size"),
    [
        ("tiny", "1:1", (128, 128)),
        ("tiny", "2:1", (256, 128)),
        ("tiny", "1:2", (128, 256)),
        ("sdxl-turbo", "1:1", (512, 512)),
        ("sdxl-turbo", "16:9", (704, 384)),
        ("sdxl-turbo", "4:3", (576, 448)),
        ("sd15", "3:2", (576, 384)),
        ("flux-dev", "16:9", (1344, 768)),
    ],
)
def test_ar_on_other_native_sizes(model, ar, size):
    """Models with another native size get multiples of 64 near their native area."""
    request = text(f"a red fox --model {model} --ar {ar}").request
    assert (request.width, request.height) == size


@pytest.mark.parametrize(
    ("native", "ratio", "size"),
    [
        ((1024, 1024), 16 / 9, (1344, 768)),
        ((1216, 832), 1.0, (1024, 1024)),
        ((128, 128), 16 / 9, (192, 128)),
        ((512, 512), 1 / 4, (256, 1024)),
    ],
)
def test_size_for_ratio(native, ratio, size):
    """`size_for_ratio` uses the SDXL buckets near 1024² and a balanced search elsewhere."""
    assert size_for_ratio(native, ratio) == size


def test_sdxl_buckets_are_the_standard_nine():
    """The buckets are the nine standard SDXL sizes, all multiples of 64."""
    assert len(SDXL_BUCKETS) == 9
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in SDXL_BUCKETS)
    assert all(0.9 < w * h / 1024**2 <= 1.0 for w, h in SDXL_BUCKETS)


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        ("a red fox --ar 4:1", "Aspect ratio 4:1 became 1536×640 (2.4:1), the nearest size for sdxl."),
        ("a red fox --ar 2:1", "Aspect ratio 2:1 became 1344×768 (1.75:1), the nearest size for sdxl."),
        (
            "a red fox --ar 16:9 --model tiny",
            "Aspect ratio 16:9 became 192×128 (1.5:1), the nearest size for tiny.",
        ),
    ],
)
def test_ar_far_from_any_size_warns(line, warning):
    """A ratio that no size matches within 5 % says what it became."""
    assert text(line).warnings == (warning,)


# ---------------------------------------------------------------------------
# Quotes and free text


@pytest.mark.parametrize(
    ("line", "prompt", "negative"),
    [
        ('"a red fox" --seed 1', "a red fox", None),
        ("a fox's den --seed 1", "a fox's den", None),
        ("'tis a fox --seed 1", "'tis a fox", None),
        ('a sign saying "hello" --seed 1', 'a sign saying "hello"', None),
        ('a fox --no "text --watermark"', "a fox", "text --watermark"),
        ("a fox --no 'x, y'", "a fox", "x, y"),
        ('"a --fox" --seed 1', "a --fox", None),
        ("“a red fox” --seed 1", "a red fox", None),
        ("a fox\n  in deep snow --seed 1", "a fox\n  in deep snow", None),
        ("a fox -- seed 1", "a fox -- seed 1", None),
        ("a fox --- 1", "a fox --- 1", None),
        ("a fox--seed 1", "a fox--seed 1", None),
        ("  a fox\r\nin snow  ", "a fox\nin snow", None),
        ("a fox\tin snow", "a fox\tin snow", None),
    ],
)
def test_quotes_and_free_text(line, prompt, negative):
    """Quotes protect `--` and are removed only when they wrap a whole value."""
    request = text(line).request
    assert (request.prompt, request.negative_prompt) == (prompt, negative)


def test_quoted_sampler_value():
    """A quoted flag value keeps its inner spaces and loses its quotes."""
    assert text("a fox --sampler 'Euler a' --seed 3").request.scheduler == "Euler a"


# ---------------------------------------------------------------------------
# Schedulers


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("dpm++ 2m karras", "DPM++ 2M Karras"),
        ("DPM++2M Karras", "DPM++ 2M Karras"),
        ("dpmpp_2m_karras", "DPM++ 2M Karras"),
        ("DPM++ 2M", "DPM++ 2M"),
        ("dpmpp 2m sde karras", "DPM++ 2M SDE Karras"),
        ("dpm++ 3m sde", "DPM++ 3M SDE"),
        ("euler", "Euler"),
        ("euler_a", "Euler a"),
        ("Euler a", "Euler a"),
        ("euler ancestral", "Euler a"),
        ("k_euler_a", "Euler a"),
        ("unipc", "UniPC"),
        ("ddim", "DDIM"),
        ("heun", "Heun"),
        ("lcm", "LCM"),
    ],
)
def test_scheduler_spellings(typed, name):
    """Scheduler names are matched forgivingly and stored canonically."""
    assert text(f"a fox --sampler {typed}").request.scheduler == name


# ---------------------------------------------------------------------------
# Errors: the sentence the user sees


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # prompt
        ("", "Prompt is empty; describe the image you want."),
        ("   --seed 4", "Prompt is empty; describe the image first, then the flags: a red fox --seed 7."),
        ("--steps 20 a cat", "Prompt is empty; describe the image first, then the flags: a red fox --seed 7."),
        ("  ", "Prompt is empty; describe the image you want."),
        ('"" --seed 4', "Prompt is empty; describe the image first, then the flags: a red fox --seed 7."),
        ("x", "Prompt is too short; describe the image you want in at least 2 characters."),
        ("a" * 3001, "Prompt is 3001 characters long; the most is 3000."),
        ("a fox\x00", "Prompt contains a control character (U+0000); remove it."),
        ("a\x1bfox", "Prompt contains a control character (U+001B); remove it."),
        ("a fox\rin snow", "Prompt contains a control character (U+000D); remove it."),
        ("a\x85fox", "Prompt contains a control character (U+0085); remove it."),
        ("a fox\ud800", "Prompt contains an invalid character (U+D800); remove it."),
        ("a fox --no a\x07b", "--no contains a control character (U+0007); remove it."),
        ("a fox --no " + "b" * 3001, "--no is 3001 characters long; the most is 3000."),
        ("a fox --no", "--no needs a value, like blurry, text."),
        # flags
        ("a fox --sed 3", "--sed is not an option; did you mean '--seed' or '--subseed'?"),
        ("a fox --sampeler x", "--sampeler is not an option; did you mean '--sampler'?"),
        ("a fox --bogus 3", "--bogus is not an option (help lists every flag)."),
        ("a fox --seed 1 --seed 2", "--seed is given twice."),
        ("a fox --clip-skip 1 --clip_skip 2", "--clip_skip is given twice."),
        ("a fox —seed 1 --seed 2", "--seed is given twice."),
        ("a fox —beautiful", "—beautiful is not an option (help lists every flag)."),
        ("a fox --n 2 --count 3", "--count repeats --n, the same option."),
        ("a fox --no x --negative y", "--negative repeats --no, the same option."),
        # numbers
        ("a fox --seed", "--seed needs a value, a whole number from 1 to 9223372036854775807."),
        ("a fox --seed 0", "--seed must be from 1 to 9223372036854775807, not 0."),
        (f"a fox --seed {MAX_SEED + 1}", f"--seed must be from 1 to 9223372036854775807, not {MAX_SEED + 1}."),
        ("a fox --seed 4.5", "--seed must be a whole number from 1 to 9223372036854775807, not '4.5'."),
        ("a fox --seed 1e3", "--seed must be a whole number from 1 to 9223372036854775807, not '1e3'."),
        ("a fox --seed ٤٢", "--seed must be a whole number from 1 to 9223372036854775807, not '٤٢'."),
        (
            "a fox --seed 42 more words",
            "--seed must be a whole number from 1 to 9223372036854775807, not '42 more words'.",
        ),
        ("a fox --steps 0", "--steps must be from 1 to 100, not 0."),
        ("a fox --steps 101", "--steps must be from 1 to 100, not 101."),
        ("a fox --cfg 51", "--cfg must be from 0 to 50, not 51."),
        ("a fox --cfg -1", "--cfg must be from 0 to 50, not -1."),
        ("a fox --cfg nan", "--cfg must be a number from 0 to 50, not 'nan'."),
        ("a fox --n 5", "--n must be from 1 to 4, not 5."),
        ("a fox --n 0", "--n must be from 1 to 4, not 0."),
        ("a fox --clip-skip 3", "--clip-skip must be from 0 to 2, not 3."),
        ("a fox --format gif", "--format must be png, jpg or webp, not 'gif'."),
        # refiner
        ("a fox --refiner", "--refiner needs a value, a percent like 85, or off."),
        ("a fox --refiner 100", "--refiner must be a percent from 1 to 99, or 0 or off for none, not '100'."),
        ("a fox --refiner 85.5", "--refiner must be a percent from 1 to 99, or 0 or off for none, not '85.5'."),
        ("a fox --refiner on", "--refiner must be a percent from 1 to 99, or 0 or off for none, not 'on'."),
        (
            "a fox --refiner 99 --steps 10",
            "--refiner at 99 % of 10 steps leaves the refiner no steps; use a lower percent or more steps.",
        ),
        (
            "a fox --refiner 1 --steps 10",
            "--refiner at 1 % of 10 steps leaves the base model no steps; use a higher percent or more steps.",
        ),
        (
            "a fox --model sdxl-turbo --refiner 85",
            "--refiner only works with SDXL base models, not with 'sdxl-turbo' (distilled SDXL).",
        ),
        (
            "a fox --model lightning --refiner 85",
            "--refiner only works with SDXL base models, not with 'lightning' (distilled SDXL).",
        ),
        (
            "a fox --model flux-dev --refiner 85",
            "--refiner only works with SDXL base models, not with 'flux-dev' (FLUX).",
        ),
        (
            "a fox --model juggernaut --refiner 85",
            "--refiner is not available for 'juggernaut': the catalog names no refiner for it.",
        ),
        # size and aspect ratio
        (
            "a fox --size 1000x832",
            "--size sides must be multiples of 64 from 128 to 2048, not 1000x832; did you mean '1024x832'?",
        ),
        (
            "a fox --size 4096x64",
            "--size sides must be multiples of 64 from 128 to 2048, not 4096x64; did you mean '2048x128'?",
        ),
        ("a fox --size big", "--size must be WIDTHxHEIGHT like 1216x832, not 'big'."),
        ("a fox --size 1024", "--size must be WIDTHxHEIGHT like 1216x832, not '1024'."),
        (
            "a fox --size 1024x1024 --ar 1:1",
            "--size cannot be combined with an aspect ratio; give one of them.",
        ),
        ("a fox --ar 5:1", "--ar must be WIDTH:HEIGHT between 1:4 and 4:1, like 16:9, not '5:1'."),
        ("a fox --ar 16:0", "--ar must be WIDTH:HEIGHT between 1:4 and 4:1, like 16:9, not '16:0'."),
        ("a fox --ar wide", "--ar must be WIDTH:HEIGHT between 1:4 and 4:1, like 16:9, not 'wide'."),
        ("a fox --ar", "--ar needs a value, like 16:9."),
        (
            "a fox --n 4 --size 2048x2048",
            "--size 2048×2048 × 4 images is 16.8 megapixels, over the budget of 4.2 megapixels.",
        ),
        # LoRAs and embeddings
        ("a fox --lora :0.8", "--lora has an empty name in ':0.8'."),
        ("a fox --lora pixel-art,,toy-face", "--lora has an empty name in 'pixel-art,,toy-face'."),
        ("a fox --lora pixel-art,", "--lora has an empty name in 'pixel-art,'."),
        ("a fox --lora a:b:c", "--lora 'a:b:c' should be a name or name:weight, like pixel-art:0.8."),
        ("a fox --lora pixel-art:x", "--lora weight of 'pixel-art' must be a number from -4 to 4, not 'x'."),
        (
            "a fox --lora pixel-art:4.5",
            "--lora weight of 'pixel-art' must be a number from -4 to 4, not '4.5'.",
        ),
        ("a fox --lora pixel-art:", "--lora weight of 'pixel-art' must be a number from -4 to 4, not ''."),
        ("a fox --lora pixel-art, Pixel-Art:0.5", "--lora names 'pixel-art' twice."),
        ("a fox --lora a, b, c, d, e, f", "--lora takes at most 5 names, not 6."),
        ("a fox --lora pixelart", "--lora 'pixelart' is not in the catalog; did you mean 'pixel-art'?"),
        (
            "a fox --lora ./x.safetensors",
            "--lora only accepts names from the catalog, not paths or URLs ('./x.safetensors').",
        ),
        (
            "a fox --lora https://civitai.com/api/download/1",
            "--lora only accepts names from the catalog, not paths or URLs ('https://civitai.com/api/download/1').",
        ),
        (
            "a fox --lora C:\\loras\\x",
            "--lora only accepts names from the catalog, not paths or URLs ('C:\\loras\\x').",
        ),
        ("a fox --lora ..", "--lora only accepts names from the catalog, not paths or URLs ('..')."),
        (
            "a fox --embedding tiny-embeding",
            "--embedding 'tiny-embeding' is not in the catalog; did you mean 'tiny-embedding' or 'sd15-embedding'?",
        ),
        ("a fox --embedding tiny-embedding, tiny-embedding:2", "--embedding names 'tiny-embedding' twice."),
        ("a fox --embedding :1", "--embedding has an empty name in ':1'."),
        # catalog names
        ("a fox --model sdxx", "--model 'sdxx' is not in the catalog; did you mean 'sdxl' or 'sd15'?"),
        (
            "a fox --model /models/x.safetensors",
            "--model only accepts names from the catalog, not paths or URLs ('/models/x.safetensors').",
        ),
        ("a fox --model", "--model needs a value, a catalog name like sdxl."),
        (
            "a fox --vae nope",
            "--vae 'nope' is not in the catalog (known: flux-vae, sd15-vae, sdxl-vae-fp16-fix, tiny-vae).",
        ),
        ("a fox --vae ../vae", "--vae only accepts names from the catalog, not paths or URLs ('../vae')."),
        (
            "a fox --sampler foo",
            "--sampler 'foo' is not a known scheduler (known: DPM++ 2M Karras, DPM++ 2M, "
            "DPM++ 2M SDE Karras, DPM++ 3M SDE, Euler, Euler a, UniPC, DDIM, Heun, LCM).",
        ),
        (
            "a fox --sampler dpm2m",
            "--sampler 'dpm2m' is not a known scheduler; did you mean 'DPM++ 2M' or 'DPM++ 2M Karras'?",
        ),
        ("a fox --tile maybe", "--tile takes no value, or off, not 'maybe'."),
        (
            "a fox --variation-seed 42",
            "--variation-seed goes with --variation, how far toward it (like --variation 0.2).",
        ),
        ("a fox --variation 1.5", "--variation must be from 0 to 1, not 1.5."),
        ("a fox --variation 0.2 --subseed 0", "--subseed must be from 1 to 9223372036854775807, not 0."),
        (
            "a fox --seed 3 --variation 0.5 --variation-seed 9223372036854775807 --n 2",
            "--variation-seed must be at most 9223372036854775806 for 2 images, since image i uses variation seed + i.",
        ),
        ("a fox --repeat 0", "--repeat must be from 1 to 40, not 0."),
        # architecture checks reached through the parser
        (
            "a fox --lora sd15-style",
            "--lora 'sd15-style' is made for SD 1.5 models and does not fit 'sdxl' (SDXL).",
        ),
        (
            "a fox --model flux-dev --vae sdxl-vae-fp16-fix",
            "--vae 'sdxl-vae-fp16-fix' is made for SDXL models and does not fit 'flux-dev' (FLUX).",
        ),
    ],
)
def test_error_sentence(line, message):
    """Each bad option gets one sentence naming the option and what it accepts."""
    assert error_of(line) == message


def test_error_names_the_option():
    """The error carries the option as the user typed it, for adapters to point at (a Slack modal's field)."""
    with pytest.raises(InvalidOption) as caught:
        text("a fox --lora a:b:c")
    assert caught.value.option == "--lora"
    with pytest.raises(InvalidOption) as caught:
        text("a fox --CLIP_skip 9")
    assert caught.value.option == "--CLIP_skip"
    with pytest.raises(InvalidOption) as caught:
        options({"prompt": "a fox", "negative": "a\x07b"})
    assert caught.value.option == "negative"
    with pytest.raises(InvalidOption) as caught:
        text("a")  # no option typed: its label, as a sentence starts
    assert caught.value.option == "prompt"


def test_long_values_are_shortened_in_messages():
    """An echoed value is cut to one short line."""
    message = error_of("a fox --seed " + "x" * 500)
    assert message == "--seed must be a whole number from 1 to 9223372036854775807, not '" + "x" * 39 + "…'."


# ---------------------------------------------------------------------------
# Mappings (Discord)


@pytest.mark.parametrize(
    ("mapping", "field", "expected"),
    [
        ({"seed": "42"}, "seed", 42),
        ({"seed": 42}, "seed", 42),
        ({"seed": None}, "seed", None),
        ({"cfg": 6}, "cfg_scale", 6.0),
        ({"cfg": "6.5"}, "cfg_scale", 6.5),
        ({"steps": " 25 "}, "steps", 25),
        ({"refiner": 85}, "refiner", RefinerSpec(model="sdxl-refiner", start_percent=85)),
        ({"refiner": 0}, "refiner", None),
        ({"refiner": "off"}, "refiner", None),
        ({"negative_prompt": "blurry"}, "negative_prompt", "blurry"),
        ({"no": "blurry"}, "negative_prompt", "blurry"),
        ({"n": 2}, "count", 2),
        ({"clip-skip": 1}, "clip_skip", 1),
        ({"Sampler": "euler a"}, "scheduler", "Euler a"),
        ({"size": "1216x832"}, "size", (1216, 832)),
        ({"ar": "9:16"}, "size", (768, 1344)),
        ({"format": "JPG"}, "output_format", "jpg"),
    ],
)
def test_mapping_option(mapping, field, expected):
    """Typed options, string or already typed, set their field; None is absent."""
    request = options({"prompt": "a red fox", **mapping}).request
    value = (request.width, request.height) if field == "size" else getattr(request, field)
    assert value == expected


def test_flags_inside_the_prompt_option():
    """Flags typed into Discord's prompt field work as in text."""
    request = options({"prompt": "a red fox --ar 16:9 --seed 7", "steps": 25}).request
    assert (request.prompt, request.width, request.height, request.seed, request.steps) == (
        "a red fox",
        1344,
        768,
        7,
        25,
    )


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({}, "Prompt is empty; describe the image you want."),
        ({"prompt": None}, "Prompt is empty; describe the image you want."),
        ({"prompt": 5}, "prompt must be text, not 5."),
        ({"prompt": "a fox", "sede": 4}, "sede is not an option; did you mean 'seed' or 'scheduler'?"),
        ({"prompt": "a fox", "width": 512}, "width is not an option."),
        ({"prompt": "a fox", 3: 4}, "3 is not an option."),
        ({"prompt": "a fox", "negative": "x", "no": "y"}, "no repeats 'negative', the same option."),
        (
            {"prompt": "a fox --seed 4", "seed": 5},
            "--seed is given twice: in the prompt and as the seed option.",
        ),
        (
            {"prompt": "a fox", "seed": True},
            "seed must be a whole number from 1 to 9223372036854775807, not 'True'.",
        ),
        (
            {"prompt": "a fox", "seed": 42.0},
            "seed must be a whole number from 1 to 9223372036854775807, not '42.0'.",
        ),
        (
            {"prompt": "a fox", "seed": ""},
            "seed needs a value, a whole number from 1 to 9223372036854775807.",
        ),
        ({"prompt": "a fox", "cfg": float("inf")}, "cfg must be a number from 0 to 50, not 'inf'."),
        ({"prompt": "a fox", "cfg": float("nan")}, "cfg must be a number from 0 to 50, not 'nan'."),
        ({"prompt": "a fox", "lora": ["pixel-art"]}, "lora must be text, not ['pixel-art']."),
        (
            {"prompt": "a fox", "refiner": True},
            "refiner must be a percent from 1 to 99, or 0 or off for none, not 'True'.",
        ),
        (
            {"prompt": "a fox", "refiner": 85.0},
            "refiner must be a percent from 1 to 99, or 0 or off for none, not '85.0'.",
        ),
        ({"prompt": "a fox", "size": 1024}, "size must be text, not 1024."),
        ({"prompt": "a fox", "model": {"name": "sdxl"}}, "model must be text, not {'name': 'sdxl'}."),
    ],
)
def test_mapping_error_sentence(mapping, message):
    """Bad typed options get the same kind of sentence as text."""
    with pytest.raises(InvalidOption) as caught:
        options(mapping)
    assert str(caught.value) == message


# ---------------------------------------------------------------------------
# Defaults


def test_defaults_model_is_used_without_model_option():
    """With no model given, the default model and its catalog values apply."""
    request = text("a red fox", defaults=Defaults(model="tiny")).request
    assert (request.model, request.width, request.height, request.steps) == ("tiny", 128, 128, 20)


USER = Defaults(model="sdxl", steps=25, scheduler="euler a", cfg=5, width=1216, height=832)


def test_user_defaults_apply_to_their_model():
    """The user's steps, scheduler, cfg and size apply when the request uses their default model."""
    request = text("a red fox", defaults=USER).request
    assert (request.steps, request.scheduler, request.cfg_scale, request.width, request.height) == (
        25,
        "Euler a",
        5.0,
        1216,
        832,
    )
    assert text("a red fox --model SDXL", defaults=USER).request == request


def test_user_defaults_do_not_apply_to_another_model():
    """Another model gets its own catalog values, not the user's SDXL settings."""
    request = text("a red fox --model sdxl-turbo", defaults=USER).request
    assert (request.steps, request.scheduler, request.cfg_scale, request.width, request.height) == (
        4,
        "Euler a",
        0.0,
        512,
        512,
    )


def test_options_override_user_defaults():
    """Typed options win over the user's defaults."""
    request = text("a red fox --steps 30 --cfg 7 --ar 1:1 --sampler ddim", defaults=USER).request
    assert (request.steps, request.scheduler, request.cfg_scale, request.width, request.height) == (
        30,
        "DDIM",
        7.0,
        1024,
        1024,
    )


def test_architecture_defaults_fill_a_bare_catalog_entry():
    """A model entry without defaults gets its architecture's."""
    request = text("a red fox --model juggernaut").request
    assert (request.steps, request.scheduler, request.cfg_scale, request.width, request.height) == (
        30,
        "DPM++ 2M Karras",
        7.0,
        1024,
        1024,
    )


@pytest.mark.parametrize(
    ("line", "refiner", "warnings"),
    [
        ("a red fox", RefinerSpec(model="sdxl-refiner", start_percent=85), ()),
        ("a red fox --refiner 0", None, ()),
        ("a red fox --refiner 90", RefinerSpec(model="sdxl-refiner", start_percent=90), ()),
        ("a red fox --model tiny", RefinerSpec(model="tiny-refiner", start_percent=85), ()),
        ("a red fox --model sdxl-turbo", None, ()),
        ("a red fox --model juggernaut", None, ()),
        ("a red fox --model lightning", None, ()),
        (
            "a red fox --steps 5",
            RefinerSpec(model="sdxl-refiner", start_percent=85),
            (
                "SDXL models work best with 20–35 steps, not 5.",
                "A refiner at 85 % on 5 steps only gets 1 refiner step.",
            ),
        ),
        (
            "a red fox --steps 2",
            None,
            (
                "Your default refiner was skipped: at 85 % of 2 steps the refiner gets no steps.",
                "SDXL models work best with 20–35 steps, not 2.",
            ),
        ),
    ],
)
def test_default_refiner_percent(line, refiner, warnings):
    """A user's default refiner applies to models that have one, unless turned off."""
    parsed = text(line, defaults=Defaults(model="sdxl", refiner_percent=85))
    assert parsed.request.refiner == refiner
    assert parsed.warnings == warnings


def test_unknown_default_model():
    """A misconfigured default model is named like a typed one."""
    assert error_of("a red fox", defaults=Defaults(model="sdxl-base")) == (
        "Model 'sdxl-base' is not in the catalog; did you mean 'sdxl-turbo' or 'sdxl'?"
    )


def test_pixel_budget_comes_from_limits():
    """The budget is the caller's, not a constant."""
    assert error_of("a red fox", limits=Limits(pixel_budget=512 * 512)) == (
        "Size 1024×1024 is 1.0 megapixels, over the budget of 0.3 megapixels."
    )
    assert text("a red fox --model sdxl-turbo", limits=Limits(pixel_budget=512 * 512)).request.width == 512


# ---------------------------------------------------------------------------
# Warnings reach the caller


@pytest.mark.parametrize(
    ("line", "warnings"),
    [
        ("a red fox --refiner 70", ("The refiner starts at 70 %; it works best from 85–90 %.",)),
        ("a red fox --refiner 90 --steps 20", ("A refiner at 90 % on 20 steps only gets 2 refiner steps.",)),
        ("a red fox --steps 50", ("SDXL models work best with 20–35 steps, not 50.",)),
        (
            "a red fox --model sdxl-turbo --no ugly",
            ("The negative prompt is ignored when cfg is 1 or less.",),
        ),
        ("a red fox --model flux-dev --no ugly", ("FLUX models ignore the negative prompt.",)),
        ("a red fox --model flux-dev --clip-skip 1", ("FLUX models ignore clip skip.",)),
        (
            "a red fox --model flux-dev --vae flux-vae",
            ("FLUX models ignore the VAE option; they use their own.",),
        ),
    ],
)
def test_parser_returns_rule_warnings(line, warnings):
    """The rules' warnings come back with the request."""
    assert text(line).warnings == warnings


# ---------------------------------------------------------------------------
# Guards


def test_all_matches_public_names():
    """`__all__` lists the public API, sorted, and every name exists."""
    assert bot.options.__all__ == [
        "OPTIONS",
        "SDXL_BUCKETS",
        "Defaults",
        "FlagRun",
        "ImageRefs",
        "Inputs",
        "Limits",
        "PanDirection",
        "Parsed",
        "as_typed",
        "flag_runs",
        "flags_help",
        "image_refs",
        "imagine_command",
        "input_images",
        "make_square",
        "option_named",
        "pan",
        "parse_options",
        "parse_text",
        "reworded",
        "size_for_image",
        "size_for_ratio",
        "zoom_out",
    ]
    assert all(hasattr(bot.options, name) for name in bot.options.__all__)
    defined = {
        name
        for name, value in vars(bot.options).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "bot.options"
    }
    assert defined <= set(bot.options.__all__)


def test_options_cover_the_request():
    """Every option name is one the mapping accepts."""
    for name in OPTIONS[1:]:
        options({"prompt": "a red fox", name: None})


def test_module_is_pure():
    """bot.options imports no chat, HTTP or torch library."""
    source = Path(bot.options.__file__).read_text(encoding="utf-8")
    for banned in ("discord", "slack", "httpx", "torch", "aiosqlite"):
        assert f"import {banned}" not in source
        assert f"from {banned}" not in source


def test_every_controlnet_option_the_controls_read_is_a_parser_option_with_a_help_line() -> None:
    """`bot.controls` reads the ControlNet options from the raw mapping this parser makes: each is typed and helped."""
    from bot.controls import CONTROL_OPTIONS

    helped = bot.options.flags_help()
    for option in CONTROL_OPTIONS:
        assert option in bot.options.OPTIONS
        assert f"--{option.replace('_', '-')}" in helped


# ---------------------------------------------------------------------------
# Styles: words around the prompt, stored as they run


def test_a_style_puts_the_prompt_in_its_place_and_adds_its_negative_words():
    request = text("a red fox --no blurry --style Cinematic").request
    assert request.prompt == (
        "cinematic film still of a red fox, shallow depth of field, anamorphic lens, film grain, moody light"
    )
    assert request.negative_prompt == "blurry, cartoon, illustration, drawing, anime"
    assert text("a red fox --style photographic").request.negative_prompt.startswith("drawing, painting")
    # Without {prompt} the style's words follow the prompt; without negative words the negative stays as typed.
    plain = text("a red fox --style grain").request
    assert (plain.prompt, plain.negative_prompt) == ("a red fox, film grain, 35mm", None)
    assert options({"prompt": "a red fox", "style": "anime"}).request.prompt.startswith("anime artwork of a red fox")


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ("a fox --style cinematc", "--style 'cinematc' is not in the catalog; did you mean 'cinematic' or 'line-art'?"),
        (
            "a fox --style ../etc/styles",
            "--style only accepts names from the catalog, not paths or URLs ('../etc/styles').",
        ),
        (
            "x" * 2950 + " --style cinematic",
            "--style cinematic makes the prompt 3040 characters long; the most is 3000.",
        ),
        ("a fox --style", "--style needs a value, a catalog name like cinematic."),
    ],
)
def test_a_style_that_is_not_there_or_makes_too_long_a_prompt_is_one_sentence(line, sentence):
    assert error_of(line) == sentence


@pytest.mark.parametrize(
    "toml",
    [
        '[style.x]\ndescription = "no words"\n',  # a style of nothing
        '[model.x]\nlocal = "tiny:base"\n',  # a model of no architecture
        '[lora.x]\narchitecture = "sdxl"\nprompt = "{prompt}, neon"\n',  # words on weights
    ],
)
def test_the_catalog_refuses_a_style_without_words_and_words_on_anything_else(toml):
    with pytest.raises(ValueError, match=r"a style needs a prompt or a negative; every other kind an architecture"):
        Catalog.from_toml(toml)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[model.a]\narchitecture = "sdxl"\naliases = ["b"]\n[model.b]\narchitecture = "sdxl"\n',
            "model 'a': alias 'b' is model 'b''s too",
        ),
        (
            '[lora.a]\narchitecture = "sdxl"\naliases = ["X"]\n[lora.b]\narchitecture = "sdxl"\naliases = ["x"]\n',
            "lora 'b': alias 'x' is lora 'a''s too",
        ),
    ],
)
def test_the_catalog_refuses_an_alias_that_names_two_entries(toml, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Catalog.from_toml(toml)
    # Of different kinds, one name may be both; an entry may list its own name.
    Catalog.from_toml('[model.a]\narchitecture = "sdxl"\naliases = ["a", "v"]\n[vae.v]\narchitecture = "sdxl"\n')


# ---------------------------------------------------------------------------
# A1111's <lora:name:weight> tags in the prompt


@pytest.mark.parametrize(
    ("line", "prompt", "loras"),
    [
        ("a fox, <lora:pixel-art:0.8>, in snow", "a fox, in snow", [("pixel-art", 0.8)]),
        ("<lora:pixel-art> a fox", "a fox", [("pixel-art", 1.0)]),
        ("a fox <LORA:toy-face:-0.5>", "a fox", [("toy-face", -0.5)]),
        ("a fox,<lora:pixel-art:0.8>,<lora:toy-face:1.2>", "a fox", [("pixel-art", 0.8), ("toy-face", 1.2)]),
        ("a fox <lora:toy-face:0.5> --lora pixel-art:0.8", "a fox", [("pixel-art", 0.8), ("toy-face", 0.5)]),
    ],
)
def test_a_prompts_lora_tags_become_its_loras(line, prompt, loras):
    """A Civitai prompt's <lora:name:weight> tags apply the LoRA, as A1111 does, and leave the prompt:
    CLIP never reads them as words. --lora and the tags add up."""
    request = text(line).request
    assert request.prompt == prompt
    assert [(lora.name, lora.weight) for lora in request.loras] == loras


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "a fox <lora:pixle-art:0.8>",
            "<lora:pixle-art:0.8> 'pixle-art' is not in the catalog; did you mean 'pixel-art'?",
        ),
        (
            "a fox <lora:pixel-art:9>",
            "<lora:pixel-art:9> weight of 'pixel-art' must be a number from -4 to 4, not '9'.",
        ),
        ("a fox <lora:>", "<lora:> names no LoRA; write <lora:name:weight>, like <lora:pixel-art:0.8>."),
        ("<lora:pixel-art:0.8>", "Prompt is empty; describe the image you want."),
        (
            "a fox <lora:pixel-art> --lora pixel-art",
            "--lora names 'pixel-art' twice (as a flag or option and as a <lora:…> tag).",
        ),
    ],
)
def test_a_bad_lora_tag_is_one_sentence_naming_it(line, message):
    """A tag's unknown name, bad weight or empty name is refused naming the tag as typed; nothing is queued."""
    assert error_of(line) == message


def test_more_than_five_loras_with_the_tags_are_refused():
    """The tags count towards the five LoRAs a request takes."""
    tags = " ".join(f"<lora:{name}>" for name in ("pixel-art", "toy-face"))
    message = error_of(f"a fox {tags} --lora film-grain --embedding x")
    assert message.startswith("--embedding")  # the LoRAs were fine: three of five
    catalog = Catalog.from_toml(
        resources.files("bot").joinpath("models.toml").read_text(encoding="utf-8")
        + "".join(f'\n[lora.extra-{n}]\narchitecture = "sdxl"\nlocal = "x/extra-{n}"\n' for n in range(4))
    )
    line = "a fox <lora:extra-0> <lora:extra-1> <lora:extra-2> --lora pixel-art, toy-face, extra-3"
    with pytest.raises(InvalidOption) as caught:
        text(line, cat=catalog)
    assert str(caught.value) == "--lora takes at most 5 LoRAs, with the prompt's <lora:…> tags; not 6."
