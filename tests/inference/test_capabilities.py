"""What the capability tables share with the core: its scheduler names and the request's own ranges."""

from __future__ import annotations

import pytest

from bot.errors import InvalidOption
from bot.request import CFG, COUNT, SIDE, STEPS, GenerationRequest
from bot.rules import SCHEDULERS
from inference.capabilities import CAPABILITIES, MODELSLAB_SCHEDULERS, RUNWARE_SCHEDULERS, Capabilities
from inference.local import _schedulers as local
from tests.inference.remote import CATALOG, request

# Each backend's scheduler table: the local worker's serves the Ray cluster too (the same code).
TABLES: dict[str, dict[str, object]] = {
    "local": dict(local.SCHEDULERS),
    "ray": dict(local.SCHEDULERS),
    "runware": dict(RUNWARE_SCHEDULERS),
    "modelslab": dict(MODELSLAB_SCHEDULERS),
}
# The documented subsets (the comments beside each table say why): refused there, with a sentence.
LACKS: dict[str, tuple[str, ...]] = {
    "local": (),
    "ray": (),
    "runware": ("DPM++ 3M SDE",),
    "modelslab": ("DPM++ 2M SDE Karras", "DPM++ 3M SDE"),
}


def test_every_backend_has_a_scheduler_table() -> None:
    """No backend is left out of the check below."""
    assert set(TABLES) == set(CAPABILITIES) == set(LACKS)


@pytest.mark.parametrize("backend", list(TABLES))
def test_a_backend_table_has_the_core_names_but_its_documented_gaps(backend: str) -> None:
    """Its keys are the core's list less what it lacks: no name of its own, none missing unsaid."""
    assert set(TABLES[backend]) == set(SCHEDULERS) - set(LACKS[backend])
    assert CAPABILITIES[backend].schedulers == tuple(name for name in SCHEDULERS if name in TABLES[backend])  # type: ignore[index]


@pytest.mark.parametrize(("backend", "name"), [(backend, name) for backend, names in LACKS.items() for name in names])
def test_a_scheduler_a_backend_lacks_is_refused_in_one_sentence(backend: str, name: str) -> None:
    """The backend's own check refuses it before anything is queued, naming the option and who has it."""
    with pytest.raises(InvalidOption) as refused:
        CAPABILITIES[backend].check(request(f"a fox --sampler '{name}'"), CATALOG)  # type: ignore[index]
    assert refused.value.option == "scheduler"
    message = str(refused.value)
    assert message.startswith(f"Scheduler '{name}' is not available on {CAPABILITIES[backend].title}")  # type: ignore[index]
    assert message.endswith(" can.") and "; the local backend" in message
    assert message.splitlines() == [message]


@pytest.mark.parametrize(
    ("backend", "name"), [(backend, name) for backend in TABLES for name in SCHEDULERS if name not in LACKS[backend]]
)
def test_every_core_scheduler_a_backend_has_passes_its_check(backend: str, name: str) -> None:
    """What a table translates, the backend's check lets through."""
    CAPABILITIES[backend].check(request(f"a fox --sampler '{name}'"), CATALOG)  # type: ignore[index]


def test_a_backend_takes_what_a_request_may_be_unless_it_says_less() -> None:
    """The defaults of a capability table are the request model's ranges, not numbers of their own."""
    default = Capabilities("local", "the local backend")
    assert (default.max_width, default.max_height) == (SIDE.high, SIDE.high)
    assert (default.max_count, default.max_steps, default.cfg) == (COUNT.high, STEPS.high, (CFG.low, CFG.high))
    for capabilities in CAPABILITIES.values():
        assert capabilities.max_width <= SIDE.high and capabilities.max_height <= SIDE.high
        assert capabilities.max_count <= COUNT.high and capabilities.max_steps <= STEPS.high
        assert CFG.low <= capabilities.cfg[0] <= capabilities.cfg[1] <= CFG.high


def test_controlnet_is_refused_where_a_backend_has_none() -> None:
    """The local backend, the Ray cluster (its code, the guides sent along) and Runware run ControlNets;
    ModelsLab says so before anything is sent."""
    from bot.request import ControlNetSpec, GenerationRequest

    spec = ControlNetSpec(model="canny-sdxl", guide="a" * 64, end_step=30)
    request = GenerationRequest(prompt="a fox", model="sdxl", controlnets=(spec,))
    CAPABILITIES["local"].check(request, CATALOG)
    CAPABILITIES["ray"].check(request, CATALOG)
    with pytest.raises(
        InvalidOption, match=r"^ControlNet is not available on ModelsLab; the local backend and Runware can\.$"
    ):
        CAPABILITIES["modelslab"].check(request, CATALOG)
    # Runware's docs name no AIR id for the shipped canny-sdxl, so the name itself is refused there.
    with pytest.raises(
        InvalidOption, match=r"^ControlNet 'canny-sdxl' is not available on Runware; the local backend can\.$"
    ):
        CAPABILITIES["runware"].check(request, CATALOG)


def test_an_ip_adapter_is_named_as_one_where_a_backend_has_none() -> None:
    """An IP-Adapter is not a ControlNet to the user: ModelsLab names what it lacks, and who has it."""
    from bot.request import ControlNetSpec, GenerationRequest

    spec = ControlNetSpec(model="ip-adapter-sdxl", guide="a" * 64, end_step=30)
    request = GenerationRequest(prompt="a fox", model="sdxl", controlnets=(spec,))
    CAPABILITIES["local"].check(request, CATALOG)
    with pytest.raises(
        InvalidOption, match=r"^IP-Adapter is not available on ModelsLab; the local backend and Runware can\.$"
    ):
        CAPABILITIES["modelslab"].check(request, CATALOG)
    remote = spec.model_copy(update={"model": "ip-adapter-remote", "weight": 1.5})
    heavy = request.model_copy(update={"controlnets": (remote,)})
    with pytest.raises(
        InvalidOption, match=r"^IP-Adapter weight is at most 1 on Runware, not 1\.5; the local backend can\.$"
    ):
        CAPABILITIES["runware"].check(heavy, CATALOG)
    assert ("IP-Adapter", "yes (every step)") in CAPABILITIES["runware"].rows()
    assert ("IP-Adapter", "yes") in CAPABILITIES["local"].rows()


def test_a_style_reference_is_the_local_workers_alone() -> None:
    """Runware's ipAdapters take one weight for every layer: a style reference is refused, naming who has it."""
    from bot.request import ControlNetSpec, GenerationRequest

    spec = ControlNetSpec(model="ip-adapter-remote", guide="a" * 64, end_step=30, style=True)
    request = GenerationRequest(prompt="a fox", model="sdxl", controlnets=(spec,))
    local = spec.model_copy(update={"model": "ip-adapter-sdxl"})  # the shipped one has no Runware id
    CAPABILITIES["local"].check(request.model_copy(update={"controlnets": (local,)}), CATALOG)
    for backend, title in (("runware", "Runware"), ("modelslab", "ModelsLab")):
        with pytest.raises(InvalidOption) as refused:
            CAPABILITIES[backend].check(request, CATALOG)
        assert str(refused.value) == f"Style reference (--sref) is not available on {title}; the local backend can."
    # As an image prompt on every layer, the same IP-Adapter goes to Runware.
    CAPABILITIES["runware"].check(
        request.model_copy(update={"controlnets": (spec.model_copy(update={"style": False}),)}), CATALOG
    )
    assert ("style reference", "yes") in CAPABILITIES["ray"].rows()
    assert ("style reference", "no") in CAPABILITIES["runware"].rows()


def test_a_controlnet_weight_above_runwares_1_is_refused_naming_the_local_backend() -> None:
    from bot.request import ControlNetSpec, GenerationRequest

    spec = ControlNetSpec(model="canny-sdxl", guide="a" * 64, end_step=30, weight=1.5)
    request = GenerationRequest(prompt="a fox", model="sdxl", controlnets=(spec,))
    CAPABILITIES["local"].check(request, CATALOG)
    with pytest.raises(
        InvalidOption, match=r"^ControlNet weight is at most 1 on Runware, not 1\.5; the local backend can\.$"
    ):
        CAPABILITIES["runware"].check(request, CATALOG)


def test_an_upscale_no_model_redraws_needs_an_upscaler_here_and_none_on_runware() -> None:
    """Local: the hires fix or a catalog upscaler; Runware, ModelsLab: their own upscaler, never a catalog one."""
    from bot.catalog import load_catalog
    from bot.request import GenerationRequest

    shipped = load_catalog()
    image = {"prompt": "a fox", "model": "tiny", "width": 256, "height": 256, "init_image": "a" * 64, "upscale": 2}
    CAPABILITIES["local"].check(GenerationRequest(**image, upscaler="tiny-upscaler"), shipped)
    CAPABILITIES["local"].check(GenerationRequest(**image, strength=0.3), shipped)
    CAPABILITIES["runware"].check(GenerationRequest(**image), shipped)
    CAPABILITIES["modelslab"].check(GenerationRequest(**image), shipped)
    # its super resolution may make more than its 1024×1024 text-to-image limit, up to the largest side
    CAPABILITIES["modelslab"].check(GenerationRequest(**image | {"width": 2048, "height": 2048}), shipped)
    with pytest.raises(
        InvalidOption,
        match=(
            r"^Upscale needs a strength \(the hires fix\) or a catalog upscaler on the local backend; "
            r"Runware and ModelsLab can\.$"
        ),
    ):
        CAPABILITIES["local"].check(GenerationRequest(**image), shipped)
    with pytest.raises(InvalidOption, match=r"^Upscaler 'tiny-upscaler' is not available on Runware; the local"):
        CAPABILITIES["runware"].check(GenerationRequest(**image, upscaler="tiny-upscaler"), shipped)
    with pytest.raises(InvalidOption, match=r"^Upscaler 'tiny-upscaler' is not available on ModelsLab; the local"):
        CAPABILITIES["modelslab"].check(GenerationRequest(**image, upscaler="tiny-upscaler"), shipped)


@pytest.mark.parametrize(("backend", "sentence"), [("runware", "Runware"), ("modelslab", "ModelsLab")])
@pytest.mark.parametrize(
    ("line", "option"),
    [("a stone wall texture --tile", "Tile"), ("a stone wall --seed 3 --variation 0.2", "Variation")],
)
def test_seamless_tiling_and_variation_seeds_are_the_local_workers_own(
    backend: str, sentence: str, line: str, option: str
) -> None:
    """--tile and --variation on an API that has no such setting (no padding mode, no starting noise or second
    seed): one sentence before anything is sent; local and Ray take them."""
    asked = request(line)
    with pytest.raises(InvalidOption) as refused:
        CAPABILITIES[backend].check(asked, CATALOG)
    assert str(refused.value) == f"{option} is not available on {sentence}; the local backend can."
    for runs_it in ("local", "ray"):
        CAPABILITIES[runs_it].check(asked, CATALOG)


# Who puts an image into words (/describe): the local captioner (Ray runs its code) and Runware's imageCaption.
DESCRIBES = {"local": True, "ray": True, "runware": True, "modelslab": False}


@pytest.mark.parametrize(("backend", "describes"), DESCRIBES.items())
def test_describe_is_a_row_of_every_table(backend: str, describes: bool) -> None:
    """``imagebot backends`` shows it, after the features a request asks for."""
    capabilities = CAPABILITIES[backend]  # type: ignore[index]
    assert capabilities.describe is describes
    assert capabilities.rows()[-1] == ("describe", "yes" if describes else "no")


@pytest.mark.parametrize("backend", [name for name, describes in DESCRIBES.items() if describes])
def test_a_backend_that_describes_lets_describe_through(backend: str) -> None:
    CAPABILITIES[backend].check_describe()  # type: ignore[index]


def test_describe_is_refused_on_modelslab_naming_who_can() -> None:
    """One sentence on the option; the Ray cluster is not named beside the local backend, as for every feature."""
    with pytest.raises(InvalidOption) as refused:
        CAPABILITIES["modelslab"].check_describe()
    assert refused.value.option == "describe"
    assert str(refused.value) == "Describe is not available on ModelsLab; the local backend and Runware can."


def test_imagebot_backends_prints_the_describe_row(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import CoreSettings
    from imagebot.cli import backends_text

    for backend in ("RUNWARE", "MODELSLAB"):
        monkeypatch.delenv(f"IMAGEBOT_{backend}_API_KEY", raising=False)
    rows = backends_text(CoreSettings(backend="local")).splitlines()
    assert rows[-1].split() == ["describe", "yes", "yes", "yes", "no"]


@pytest.mark.parametrize(
    ("backend", "inpaints"), [("local", True), ("ray", True), ("runware", True), ("modelslab", False)]
)
def test_vary_region_is_withheld_where_a_backend_does_not_inpaint(backend: str, inpaints: bool) -> None:
    """🖌️ Vary (Region) inpaints the image: no button under a result where the backend cannot (ModelsLab's API)."""
    request = GenerationRequest(prompt="a fox", model="tiny", width=512, height=512)
    assert ("region" in CAPABILITIES[backend].withheld_actions(request)) is not inpaints  # type: ignore[index]
    assert CAPABILITIES[backend].inpaint is inpaints  # type: ignore[index]
