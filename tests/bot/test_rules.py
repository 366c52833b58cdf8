"""Table tests of the architecture-aware rules: every warning and every error sentence."""

from importlib import resources
from pathlib import Path

import pytest

import bot.rules
from bot.catalog import Catalog
from bot.errors import InvalidOption
from bot.request import MAX_SEED, GenerationRequest, RefinerSpec, WeightedName
from bot.rules import (
    ARCHITECTURES,
    DEFAULT_REFINE_PERCENT,
    SCHEDULERS,
    Limits,
    architecture_of,
    check,
    match_scheduler,
)


def catalog() -> Catalog:
    """The shipped catalog plus the test entries (film-grain, FLUX, SD 1.5, wrong entries)."""
    shipped = resources.files("bot").joinpath("models.toml").read_text(encoding="utf-8")
    extra = Path(__file__).with_name("options_catalog.toml").read_text(encoding="utf-8")
    return Catalog.from_toml(shipped + "\n" + extra)


CATALOG = catalog()
LIMITS = Limits(pixel_budget=4 * 1024 * 1024)


def request(**changes) -> GenerationRequest:
    """A plain, valid SDXL request with some fields changed."""
    fields = {"prompt": "a red fox", "model": "sdxl", "steps": 30, "cfg_scale": 7.0, "seed": 42}
    return GenerationRequest(**(fields | changes))


def refiner(percent: int | None = None, step: int | None = None, model: str = "sdxl-refiner") -> RefinerSpec:
    return RefinerSpec(model=model, start_percent=percent, start_step=step)


def error_of(req: GenerationRequest, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidOption) as caught:
        check(req, CATALOG, limits)
    return str(caught.value)


def test_plain_request_has_no_warnings():
    """A request inside every recommendation passes silently."""
    assert check(request(), CATALOG, LIMITS) == ()


# ---------------------------------------------------------------------------
# Warnings


@pytest.mark.parametrize(
    ("req", "warnings"),
    [
        # refiner start
        (request(refiner=refiner(85)), ()),
        (request(refiner=refiner(80)), ()),
        (request(refiner=refiner(79)), ("The refiner starts at 79 %; it works best from 85–90 %.",)),
        (request(refiner=refiner(50)), ("The refiner starts at 50 %; it works best from 85–90 %.",)),
        (request(refiner=refiner(step=20)), ("The refiner starts at 67 %; it works best from 85–90 %.",)),
        (request(refiner=refiner(step=24)), ()),
        # refiner steps
        (
            request(steps=20, refiner=refiner(90)),
            ("A refiner at 90 % on 20 steps only gets 2 refiner steps.",),
        ),
        (request(steps=30, refiner=refiner(90)), ()),
        (
            request(steps=30, refiner=refiner(95)),
            ("A refiner at 95 % on 30 steps only gets 1 refiner step.",),
        ),
        (
            request(steps=30, refiner=refiner(step=29)),
            ("A refiner from step 29 on 30 steps only gets 1 refiner step.",),
        ),
        (
            request(steps=10, refiner=refiner(50)),
            (
                "SDXL models work best with 20–35 steps, not 10.",
                "The refiner starts at 50 %; it works best from 85–90 %.",
            ),
        ),
        # steps per architecture
        (request(steps=20), ()),
        (request(steps=35), ()),
        (request(steps=19), ("SDXL models work best with 20–35 steps, not 19.",)),
        (request(steps=50), ("SDXL models work best with 20–35 steps, not 50.",)),
        (request(model="sdxl-turbo", steps=4, cfg_scale=0.0), ()),
        (
            request(model="sdxl-turbo", steps=30, cfg_scale=0.0),
            ("Distilled SDXL models work best with 4–8 steps, not 30.",),
        ),
        (request(model="flux-dev", steps=28), ()),
        (request(model="flux-dev", steps=10), ("FLUX models work best with 20–50 steps, not 10.",)),
        (request(model="sd15", steps=40), ("SD 1.5 models work best with 20–30 steps, not 40.",)),
        (request(model="pony", steps=99), ()),
        # ignored options
        (request(negative_prompt="blurry"), ()),
        (
            request(negative_prompt="blurry", cfg_scale=1.0),
            ("The negative prompt is ignored when cfg is 1 or less.",),
        ),
        (
            request(negative_prompt="blurry", cfg_scale=0.0),
            ("The negative prompt is ignored when cfg is 1 or less.",),
        ),
        (request(negative_prompt="blurry", cfg_scale=1.5), ()),
        (request(model="flux-dev", negative_prompt="blurry"), ("FLUX models ignore the negative prompt.",)),
        (
            request(model="flux-dev", negative_prompt="blurry", cfg_scale=1.0),
            ("FLUX models ignore the negative prompt.",),
        ),
        (
            request(model="flux-dev", vae="flux-vae"),
            ("FLUX models ignore the VAE option; they use their own.",),
        ),
        (request(model="flux-dev", clip_skip=2), ("FLUX models ignore clip skip.",)),
        (request(clip_skip=2, vae="sdxl-vae-fp16-fix"), ()),
        (
            request(model="flux-dev", steps=5, negative_prompt="x", vae="flux-vae", clip_skip=1),
            (
                "FLUX models work best with 20–50 steps, not 5.",
                "FLUX models ignore the negative prompt.",
                "FLUX models ignore the VAE option; they use their own.",
                "FLUX models ignore clip skip.",
            ),
        ),
        # add-ons of the same family
        (
            request(model="lightning", steps=8, cfg_scale=1.0, loras=(WeightedName(name="pixel-art"),)),
            ("LoRA pixel-art works best with 'pixel art' in the prompt.",),
        ),
        (request(model="tiny", steps=20, width=128, height=128, vae="tiny-vae"), ()),
        # a LoRA's trigger words: any of them, in any case, with spaces or underscores, weighted or not
        (request(prompt="(Pixel  Art:1.2) of a fox", loras=(WeightedName(name="pixel-art"),)), ()),
        (request(prompt="a toy face", loras=(WeightedName(name="toy-face"),)), ()),
        (
            request(prompt="a pixel fox", loras=(WeightedName(name="pixel-art"), WeightedName(name="toy-face"))),
            (
                "LoRA pixel-art works best with 'pixel art' in the prompt.",
                "LoRA toy-face works best with 'toy_face' in the prompt.",
            ),
        ),
        (request(prompt="a fox", loras=(WeightedName(name="tiny-lora"),)), ()),  # no trigger words
    ],
)
def test_warning(req, warnings):
    """Each rule that only warns produces its one sentence."""
    assert check(req, CATALOG, LIMITS) == warnings


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("req", "message"),
    [
        # unknown names
        (request(model="sdxx"), "Model 'sdxx' is not in the catalog; did you mean 'sdxl' or 'sd15'?"),
        (
            request(model="sdxl-refiner"),
            "Model 'sdxl-refiner' is not in the catalog; did you mean 'sdxl-turbo' or 'sdxl'?",
        ),
        (
            request(loras=(WeightedName(name="pixelart"),)),
            "Lora 'pixelart' is not in the catalog; did you mean 'pixel-art'?",
        ),
        (
            request(embeddings=(WeightedName(name="tiny-embeding"),)),
            "Embedding 'tiny-embeding' is not in the catalog; did you mean 'tiny-embedding' or 'sd15-embedding'?",
        ),
        (
            request(vae="sdxl-vae"),
            "VAE 'sdxl-vae' is not in the catalog; did you mean 'sd15-vae' or 'sdxl-vae-fp16-fix' or 'flux-vae'?",
        ),
        (
            request(refiner=refiner(85, model="sdxl-refine")),
            "Refiner 'sdxl-refine' is not in the catalog; did you mean 'sdxl-refiner' or "
            "'tiny-refiner' or 'not-a-refiner'?",
        ),
        (
            request(scheduler="Euler Ancestral Karras"),
            "Scheduler 'Euler Ancestral Karras' is not a known scheduler; did you mean 'Euler a'?",
        ),
        (
            request(scheduler="euler a"),
            "Scheduler 'euler a' is not written as the backends expect; did you mean 'Euler a'?",
        ),
        # refiner
        (
            request(model="flux-dev", refiner=refiner(85)),
            "Refiner only works with SDXL base models, not with 'flux-dev' (FLUX).",
        ),
        (
            request(model="sdxl-turbo", steps=4, cfg_scale=0.0, refiner=refiner(85)),
            "Refiner only works with SDXL base models, not with 'sdxl-turbo' (distilled SDXL).",
        ),
        (
            request(model="pony", refiner=refiner(85)),
            "Refiner only works with SDXL base models, not with 'pony' (pony).",
        ),
        (request(refiner=refiner(85, model="sdxl")), "Refiner 'sdxl' is a model, not a refiner."),
        (request(refiner=refiner(85, model="pixel-art")), "Refiner 'pixel-art' is a lora, not a refiner."),
        (
            request(refiner=refiner(85, model="not-a-refiner")),
            "Refiner 'not-a-refiner' is not a refiner (its architecture is sdxl).",
        ),
        (
            request(steps=10, refiner=refiner(99)),
            "Refiner at 99 % of 10 steps leaves the refiner no steps; use a lower percent or more steps.",
        ),
        (
            request(steps=10, refiner=refiner(95)),
            "Refiner at 95 % of 10 steps leaves the refiner no steps; use a lower percent or more steps.",
        ),
        (
            request(steps=10, refiner=refiner(4)),
            "Refiner at 4 % of 10 steps leaves the base model no steps; use a higher percent or more steps.",
        ),
        (
            request(steps=10, refiner=refiner(step=10)),
            "Refiner from step 10 of 10 steps leaves the refiner no steps; use a lower percent or more steps.",
        ),
        (
            request(steps=10, refiner=refiner(step=40)),
            "Refiner from step 40 of 10 steps leaves the refiner no steps; use a lower percent or more steps.",
        ),
        # architecture of add-ons
        (
            request(loras=(WeightedName(name="sd15-style"),)),
            "Lora 'sd15-style' is made for SD 1.5 models and does not fit 'sdxl' (SDXL).",
        ),
        (
            request(model="flux-dev", loras=(WeightedName(name="pixel-art"),)),
            "Lora 'pixel-art' is made for SDXL models and does not fit 'flux-dev' (FLUX).",
        ),
        (
            request(embeddings=(WeightedName(name="sd15-embedding"),)),
            "Embedding 'sd15-embedding' is made for SD 1.5 models and does not fit 'sdxl' (SDXL).",
        ),
        (
            request(vae="sd15-vae"),
            "VAE 'sd15-vae' is made for SD 1.5 models and does not fit 'sdxl' (SDXL).",
        ),
        (
            request(model="sd15", steps=25, vae="sdxl-vae-fp16-fix"),
            "VAE 'sdxl-vae-fp16-fix' is made for SDXL models and does not fit 'sd15' (SD 1.5).",
        ),
        (
            request(model="pony", loras=(WeightedName(name="pixel-art"),)),
            "Lora 'pixel-art' is made for SDXL models and does not fit 'pony' (pony).",
        ),
        # pixel budget
        (
            request(width=2048, height=2048, count=4),
            "Size 2048×2048 × 4 images is 16.8 megapixels, over the budget of 4.2 megapixels.",
        ),
        # seeds
        (
            request(seed=MAX_SEED, count=2),
            "Seed must be at most 9223372036854775806 for 2 images, since image i uses seed + i.",
        ),
    ],
)
def test_error(req, message):
    """Each rule that refuses a request says why in one sentence."""
    assert error_of(req) == message


@pytest.mark.parametrize(
    ("req", "budget", "message"),
    [
        (
            request(width=1216, height=832),
            1_000_000,
            "Size 1216×832 is 1.01 megapixels, over the budget of 1.00 megapixels.",
        ),
        (
            request(width=1024, height=1024),
            1024 * 1024 - 1,
            "Size 1024×1024 is 1.048576 megapixels, over the budget of 1.048575 megapixels.",
        ),
        (
            request(width=1024, height=1024, count=2),
            1024 * 1024,
            "Size 1024×1024 × 2 images is 2.1 megapixels, over the budget of 1.0 megapixels.",
        ),
    ],
)
def test_budget_numbers_never_print_equal(req, budget, message):
    """The asked size and the budget are printed with enough digits to differ."""
    assert error_of(req, Limits(pixel_budget=budget)) == message


@pytest.mark.parametrize(
    "req",
    [
        request(width=2048, height=2048),
        request(width=1024, height=1024, count=4),
        request(seed=MAX_SEED - 3, count=4),
        request(seed=None, count=4),
        request(steps=10, refiner=refiner(94)),
        request(steps=10, refiner=refiner(5)),
        request(steps=10, refiner=refiner(step=9)),
    ],
)
def test_edges_that_pass(req):
    """Requests exactly at a limit are accepted."""
    check(req, CATALOG, LIMITS)


def test_error_names_the_option():
    """The error carries the option name for adapters to point at."""
    with pytest.raises(InvalidOption) as caught:
        check(request(width=2048, height=2048, count=2), CATALOG, LIMITS)
    assert caught.value.option == "size"
    with pytest.raises(InvalidOption) as caught:
        check(request(vae="sd15-vae"), CATALOG, LIMITS)
    assert caught.value.option == "VAE"


# ---------------------------------------------------------------------------
# Schedulers and tables


def test_scheduler_names_are_fixed():
    """The inference helper maps exactly these names."""
    assert SCHEDULERS == (
        "DPM++ 2M Karras",
        "DPM++ 2M",
        "DPM++ 2M SDE Karras",
        "DPM++ 3M SDE",
        "Euler",
        "Euler a",
        "UniPC",
        "DDIM",
        "Heun",
        "LCM",
    )


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_matches_itself_in_any_case(name):
    """Each canonical name survives case and spacing changes."""
    assert match_scheduler(name) == name
    assert match_scheduler(name.upper()) == name
    assert match_scheduler(name.lower().replace(" ", "_")) == name
    assert match_scheduler(name.replace(" ", "")) == name


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (
            "foo",
            "Scheduler 'foo' is not a known scheduler (known: DPM++ 2M Karras, DPM++ 2M, "
            "DPM++ 2M SDE Karras, "
            "DPM++ 3M SDE, Euler, Euler a, UniPC, DDIM, Heun, LCM).",
        ),
        ("eular", "Scheduler 'eular' is not a known scheduler; did you mean 'Euler' or 'Euler a'?"),
        ("unipcc", "Scheduler 'unipcc' is not a known scheduler; did you mean 'UniPC'?"),
    ],
)
def test_unknown_scheduler(typed, message):
    """An unknown scheduler names close ones, or all of them."""
    with pytest.raises(InvalidOption) as caught:
        match_scheduler(typed)
    assert str(caught.value) == message


def test_default_refine_percent():
    """`refine` without a number uses the low end of the docs' best range."""
    assert DEFAULT_REFINE_PERCENT == 85


def test_architecture_table():
    """The table covers the five architectures with the documented values."""
    assert set(ARCHITECTURES) == {"sdxl", "sdxl-distilled", "sdxl-refiner", "flux", "sd15"}
    assert ARCHITECTURES["sdxl"].recommended_steps == (20, 35)
    assert ARCHITECTURES["sdxl"].max_steps == 100
    assert ARCHITECTURES["sdxl-distilled"].recommended_steps == (4, 8)
    assert [name for name, arch in ARCHITECTURES.items() if arch.accepts_refiner] == ["sdxl"]
    assert ARCHITECTURES["flux"].uses_negative_prompt is False
    assert ARCHITECTURES["sd15"].native_size == (512, 512)
    for arch in ARCHITECTURES.values():
        assert arch.default_scheduler in SCHEDULERS
        low, high = arch.recommended_steps
        assert 1 <= low <= arch.default_steps <= high <= arch.max_steps


def test_unknown_architecture_is_permissive():
    """An architecture the table lacks gets no tips, no refiner, and its own family."""
    arch = architecture_of("pony")
    assert (arch.family, arch.accepts_refiner, arch.recommended_steps) == ("pony", False, (1, 100))


def test_all_matches_public_names():
    """`__all__` lists the public API, sorted, and every name exists."""
    assert bot.rules.__all__ == [
        "ARCHITECTURES",
        "DEFAULT_REFINE_PERCENT",
        "SCHEDULERS",
        "Architecture",
        "Limits",
        "architecture_of",
        "check",
        "match_scheduler",
        "require_refiner_support",
    ]
    defined = {
        name
        for name, value in vars(bot.rules).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "bot.rules"
    }
    assert defined <= set(bot.rules.__all__)
    assert all(hasattr(bot.rules, name) for name in bot.rules.__all__)
