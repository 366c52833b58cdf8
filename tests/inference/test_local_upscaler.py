"""Local ESRGAN-family upscalers: the two networks, what their weights are read as, and upscales on the runner."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from bot.catalog import Catalog, load_catalog
from bot.images import input_path
from bot.request import GenerationRequest
from inference.local import _esrgan as esrgan
from inference.local._job import build_job
from tests.inference.test_local_image_inputs import gradient, store_input

pytest.importorskip("diffusers")

from inference.local._pipeline import JobFailed, SDXLRunner

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def runner(tiny_data_dir):
    return SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def init_sha(tiny_data_dir):
    return store_input(tiny_data_dir, gradient(128, 64))


def upscale_request(init_sha: str, factor: int, upscaler: str | None = "tiny-upscaler", **fields) -> GenerationRequest:
    return GenerationRequest(
        prompt="a red fox",
        model="tiny",
        width=128 * factor,
        height=64 * factor,
        steps=20,
        seed=7,
        init_image=init_sha,
        upscale=factor,
        upscaler=upscaler,
        **fields,
    )


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def official_compact(features: int = 8, convs: int = 2, scale: int = 4) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact weights named and shaped as Real-ESRGAN's own files are, built without our module."""
    generator = torch.Generator().manual_seed(3)
    weights = {"body.0.weight": (features, 3, 3, 3), "body.0.bias": (features,), "body.1.weight": (features,)}
    for i in range(convs):
        conv, act = 2 + 2 * i, 3 + 2 * i
        weights |= {f"body.{conv}.weight": (features, features, 3, 3), f"body.{conv}.bias": (features,)}
        weights[f"body.{act}.weight"] = (features,)
    last = 2 + 2 * convs
    weights |= {f"body.{last}.weight": (3 * scale * scale, features, 3, 3), f"body.{last}.bias": (3 * scale * scale,)}
    return {key: torch.randn(shape, generator=generator) * 0.1 for key, shape in weights.items()}


def official_rrdb(scale: int = 2, features: int = 4, blocks: int = 2, growth: int = 4) -> dict[str, torch.Tensor]:
    """RRDBNet weights named and shaped as RealESRGAN_x4plus / x2plus are, built without our module."""
    generator = torch.Generator().manual_seed(4)
    in_channels = {4: 3, 2: 12, 1: 48}[scale]
    shapes: dict[str, tuple[int, ...]] = {"conv_first": (features, in_channels, 3, 3)}
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                out = features if conv == 5 else growth
                shapes[f"body.{block}.rdb{rdb}.conv{conv}"] = (out, features + (conv - 1) * growth, 3, 3)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (features, features, 3, 3)
    shapes["conv_last"] = (3, features, 3, 3)
    weights = {}
    for name, shape in shapes.items():
        weights[f"{name}.weight"] = torch.randn(shape, generator=generator) * 0.1
        weights[f"{name}.bias"] = torch.randn(shape[0], generator=generator) * 0.1
    return weights


def old_esrgan_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same ×4 RRDBNet in the original ESRGAN file layout (``model.0``, ``model.1.sub.N.RDB1.conv1.0`` …)."""
    blocks = 1 + max(int(key.split(".")[1]) for key in weights if key.startswith("body."))
    tail = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    old = {}
    for key, value in weights.items():
        name, what = key.rsplit(".", 1)
        if name in tail:
            old[f"model.{tail[name]}.{what}"] = value
        elif name == "conv_body":
            old[f"model.1.sub.{blocks}.{what}"] = value
        else:
            _, block, rdb, conv = name.split(".")
            old[f"model.1.sub.{block}.RDB{rdb[-1]}.conv{conv[-1]}.0.{what}"] = value
    return old


def through(weights: dict[str, torch.Tensor], image: Image.Image, factor: int = 2) -> bytes:
    net, found = esrgan.build(weights)
    out = esrgan.upscale(net, found, image, (image.width * factor, image.height * factor))
    return out.tobytes()


# -- the runner: what a user gets ------------------------------------------------------------------


@pytest.mark.parametrize("upscaler", ["tiny-upscaler", "tiny-upscaler-x2"])
@pytest.mark.parametrize("factor", [2, 4])
def test_an_upscale_is_exactly_2x_or_4x_the_input(runner, init_sha, upscaler, factor):
    """A ×4 network asked for 2× and a ×2 network asked for 4× both make exactly the size asked, as a PNG."""
    job = build_job(upscale_request(init_sha, factor, upscaler), CATALOG, runner.data_dir)
    (image,) = runner.run(job)
    made = decoded(image.data)
    assert made.format == "PNG" and made.size == (128 * factor, 64 * factor) == (image.width, image.height)
    assert image.seed == 7 and image.meta["upscaler"] == upscaler and image.meta["base_steps"] == 0


def test_the_network_ran_and_the_same_image_gives_the_same_bytes(runner, init_sha, tiny_data_dir):
    """The upscale is not a Lanczos resize, and the same input gives the same bytes twice."""
    job = build_job(upscale_request(init_sha, 2), CATALOG, runner.data_dir)
    first, again = runner.run(job)[0], runner.run(job)[0]
    assert first.data == again.data
    with Image.open(tiny_data_dir / input_path(init_sha)) as source:
        lanczos = np.asarray(source.convert("RGB").resize((256, 128), Image.Resampling.LANCZOS), dtype=np.int16)
    made = np.asarray(decoded(first.data).convert("RGB"), dtype=np.int16)
    assert np.abs(made - lanczos).mean() > 2
    assert runner.stats()["upscaler"] == 2  # tiny-upscaler and tiny-upscaler-x2, each loaded once


def test_no_sdxl_pipeline_runs_for_an_upscaler(tiny_data_dir, init_sha):
    """An upscaler job loads the network, not the SDXL base."""
    fresh = SDXLRunner(tiny_data_dir, device="cpu", dtype="float32")
    fresh.run(build_job(upscale_request(init_sha, 2), CATALOG, tiny_data_dir))
    assert fresh.stats()["pipeline"] == 0 and fresh.stats()["upscaler"] == 1 and fresh.base is None


def test_progress_counts_tiles_and_cancel_stops_between_them(runner, init_sha):
    from inference.local._pipeline import RunCancelled

    job = build_job(upscale_request(init_sha, 2), CATALOG, runner.data_dir)
    events = []
    runner.run(job, on_progress=lambda *event: events.append(event[:3]))
    assert events and events[-1][1] == events[-1][2]
    with pytest.raises(RunCancelled):
        runner.run(job, should_cancel=lambda: True)


def catalog_with(local: Path) -> Catalog:
    text = (
        '[model.tiny]\narchitecture = "sdxl"\nlocal = "tiny:base"\n\n'
        f'[upscaler.odd]\narchitecture = "esrgan"\nlocal = "{local}"\n'
    )
    return Catalog.from_toml(text)


def test_weights_of_an_unknown_network_are_one_sentence(runner, init_sha, tmp_path):
    """A .safetensors of another network fails the job with a sentence naming the upscaler, not a traceback."""
    path = tmp_path / "not-esrgan.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "decoder.weight": torch.zeros(4)}, path)
    job = build_job(upscale_request(init_sha, 2, "odd"), catalog_with(path), runner.data_dir)
    with pytest.raises(JobFailed) as failure:
        runner.run(job)
    assert failure.value.message == (
        "the upscaler 'odd' is not an ESRGAN-family network this bot can run (it has neither RRDBNet's"
        " conv_first nor SRVGGNetCompact's body.0; these two are the ones it knows)"
    )
    missing = build_job(upscale_request(init_sha, 2, "odd"), catalog_with(tmp_path / "gone.pth"), runner.data_dir)
    with pytest.raises(JobFailed, match=r"^the upscaler 'odd' could not be loaded"):
        runner.run(missing)


def test_a_pth_with_params_ema_loads_with_weights_only(runner, init_sha, tmp_path):
    """Real-ESRGAN's .pth layout ({"params_ema": …}) loads, and makes what the same .safetensors weights make."""
    weights = official_compact()
    torch.save({"params_ema": weights}, tmp_path / "compact.pth")
    save_file(weights, tmp_path / "compact.safetensors")
    made = [
        runner.run(build_job(upscale_request(init_sha, 4, "odd"), catalog_with(tmp_path / name), runner.data_dir))[0]
        for name in ("compact.pth", "compact.safetensors")
    ]
    assert made[0].data == made[1].data


# -- the module: weights in, network out -----------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (official_compact(8, 2, 4), esrgan.Architecture("compact", 4, 8, 2)),
        (official_compact(6, 0, 2), esrgan.Architecture("compact", 2, 6, 0)),
        (official_rrdb(2, 4, 2, 4), esrgan.Architecture("rrdb", 2, 4, 2, 4)),
        (official_rrdb(4, 6, 1, 3), esrgan.Architecture("rrdb", 4, 6, 1, 3)),
        (official_rrdb(1, 4, 1, 2), esrgan.Architecture("rrdb", 1, 4, 1, 2)),
    ],
)
def test_official_key_names_load_as_the_architecture_they_are(weights, expected):
    """Weights laid out under Real-ESRGAN's names are detected (kind, scale, width, depth) and load strictly."""
    net, found = esrgan.build(weights)
    assert found == expected
    assert {key: tuple(value.shape) for key, value in net.state_dict().items()} == {
        key: tuple(value.shape) for key, value in weights.items()
    }


def test_our_saved_weights_round_trip(tmp_path):
    """A network's own state dict, saved as .safetensors and loaded again, gives the same pixels."""
    torch.manual_seed(0)
    for architecture in (esrgan.Architecture("compact", 4, 8, 2), esrgan.Architecture("rrdb", 2, 4, 1, 4)):
        net = architecture.module().eval()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "net.safetensors")
        loaded, found = esrgan.load_upscaler(tmp_path / "net.safetensors")
        assert found == architecture
        image = gradient(48, 32)
        expected = esrgan.upscale(net, architecture, image, (96, 64))
        assert esrgan.upscale(loaded, found, image, (96, 64)).tobytes() == expected.tobytes()


def test_the_original_esrgan_layout_is_the_same_network():
    """4x-UltraSharp-style files (``model.0``, ``model.1.sub.0.RDB1.conv1.0`` …) load as the RRDBNet they are."""
    weights = official_rrdb(4, 4, 2, 4)
    image = gradient(32, 32)
    assert esrgan.build(old_esrgan_layout(weights))[1] == esrgan.Architecture("rrdb", 4, 4, 2, 4)
    assert through(old_esrgan_layout(weights), image) == through(weights, image)


def test_tiles_give_the_image_the_whole_would_within_one_level():
    """Tiled (memory bounded by the tile) and in one piece differ by at most 1/255 per channel."""
    net, found = esrgan.build(official_rrdb(2, 4, 1, 4))
    image = gradient(100, 70)  # not a multiple of the tile, and an odd tile edge for the unshuffle
    whole = np.asarray(esrgan.upscale(net, found, image, (200, 140), tile=1000), dtype=np.int16)
    tiled = np.asarray(esrgan.upscale(net, found, image, (200, 140), tile=33), dtype=np.int16)
    assert np.abs(whole - tiled).max() <= 1


@pytest.mark.parametrize(
    "broken",
    [
        lambda w: {k: v for k, v in w.items() if k != "conv_hr.weight"},
        lambda w: {**w, "conv_up3.weight": torch.zeros(4, 4, 3, 3)},
        lambda w: {**w, "conv_first.weight": torch.zeros(4, 5, 3, 3)},
        lambda w: {**w, "body.0.rdb2.conv3.weight": torch.zeros(4, 4, 3, 3)},
        lambda w: {"body.0.weight": torch.zeros(8, 3, 3, 3)},
        lambda w: {},
    ],
)
def test_weights_that_do_not_fit_are_refused_with_a_sentence(broken):
    with pytest.raises(esrgan.UnknownUpscaler) as refused:
        esrgan.build(broken(official_rrdb(2, 4, 1, 4)))
    text = str(refused.value)
    assert text and "\n" not in text and len(text) < 200


_KEYS = st.sampled_from(
    [
        "conv_first.weight",
        "conv_last.weight",
        "conv_up1.weight",
        "conv_up3.weight",
        "conv_body.weight",
        "body.0.weight",
        "body.1.weight",
        "body.2.weight",
        "body.4.weight",
        "body.0.rdb1.conv1.weight",
        "body.3.rdb1.conv1.weight",
        "model.0.weight",
        "model.1.sub.0.RDB1.conv1.0.weight",
        "model.1.sub.1.weight",
        "model.3.weight",
        "params_ema",
    ]
) | st.text(min_size=0, max_size=20)
_SHAPES = st.lists(st.integers(min_value=-2, max_value=10**6), min_size=0, max_size=5)


@given(st.dictionaries(_KEYS, _SHAPES, max_size=12))
def test_any_names_and_shapes_are_a_network_or_the_sentence(shapes):
    """Property: `detect` over any names and shapes gives an architecture or raises `UnknownUpscaler`, nothing else."""
    try:
        found = esrgan.detect(shapes)
    except esrgan.UnknownUpscaler as refused:
        assert str(refused) and "\n" not in str(refused)
    else:
        assert found.kind in ("compact", "rrdb") and found.scale in (1, 2, 3, 4)


@given(st.data())
def test_a_real_layout_with_one_shape_changed_is_refused_or_still_that_network(data):
    """Property: changing one dimension of a valid layout never raises anything but `UnknownUpscaler`."""
    weights = data.draw(st.sampled_from([official_compact(4, 1, 4), official_rrdb(2, 4, 1, 4)]))
    shapes = {key: list(value.shape) for key, value in weights.items()}
    key = data.draw(st.sampled_from(sorted(shapes)))
    if shapes[key]:
        index = data.draw(st.integers(0, len(shapes[key]) - 1))
        shapes[key][index] = data.draw(st.integers(0, 64))
    try:
        found = esrgan.detect(shapes)
    except esrgan.UnknownUpscaler:
        return
    assert found.kind == ("compact" if "body.0.weight" in shapes else "rrdb")
