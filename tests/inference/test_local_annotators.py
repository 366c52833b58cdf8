"""Depth and openpose guide maps on the local backend: catalog annotators run by the real worker process."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image, ImageDraw

from bot.catalog import KINDS, Catalog, load_catalog
from bot.errors import BackendUnavailable, InvalidOption
from bot.images import input_path
from bot.ports import GuideBackend
from inference import tiny
from inference.local import LocalBackend
from inference.local._annotators import Annotators, find_annotator
from inference.local._folders import weights_folder
from tests.fakes.service import started_service
from tests.inference.remote import WHO

pytest.importorskip("transformers")

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CATALOG = load_catalog()
# The shipped catalog without its tiny annotators: the operator's Depth Anything and ViTPose, their folders empty.
NO_TINY = Catalog(
    [entry for kind in KINDS for entry in CATALOG.entries(kind) if entry.name not in {"tiny-depth", "tiny-pose"}]
)


def photo() -> bytes:
    """A dark square on a light gradient, 128×128: something for a depth network to see."""
    x = np.linspace(80, 250, 128, dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(x, (128, 1))] * 3, axis=-1), "RGB")
    ImageDraw.Draw(image).rectangle((32, 32, 95, 95), fill=(20, 30, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def load(ref: str, option: str) -> bytes:
    return {"photo.png": photo()}[ref]


def data_dir_with_tiny(root: Path, tiny_data_dir: Path) -> Path:
    """A fresh data directory that sees the session's tiny model (built once) and nothing else."""
    data_dir = root / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(tiny_data_dir / "models", target_is_directory=True)
    return data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    return data_dir_with_tiny(tmp_path_factory.mktemp("depth"), tiny_data_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(data_dir: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(CATALOG, data_dir, device="cpu")
    yield backend
    await backend.aclose()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "PNG"
        return np.asarray(opened.convert("RGB"))


async def test_depth_is_offered_only_while_an_annotators_files_are_there(local, data_dir, tmp_path):
    """The tiny annotator once the tiny model is built; the operator's folder wins once it holds a model."""
    assert isinstance(local, GuideBackend)
    assert local.guide_preprocessors == frozenset({"depth", "openpose"})
    entry, _ = find_annotator(CATALOG, data_dir, "depth") or (None, None)
    assert entry is not None and entry.name == "tiny-depth"
    entry, folder = find_annotator(CATALOG, data_dir, "openpose") or (None, None)
    assert entry is not None and entry.name == "tiny-pose" and folder == tiny.tiny_root(data_dir) / "pose"
    assert find_annotator(CATALOG, data_dir, "lineart") is None
    assert LocalBackend(NO_TINY, data_dir).guide_preprocessors == frozenset()
    assert LocalBackend(CATALOG, tmp_path).guide_preprocessors == frozenset()  # no tiny model built here: nothing

    own = tmp_path / "annotators" / "depth-anything-v2-small"
    own.mkdir(parents=True)
    (tmp_path / "models").symlink_to(data_dir / "models", target_is_directory=True)
    assert weights_folder(CATALOG.get("annotator", "depth-anything-v2-small"), tmp_path) is None  # an empty folder
    (own / "config.json").write_text("{}", encoding="utf-8")
    entry, folder = find_annotator(CATALOG, tmp_path, "depth") or (None, None)
    assert entry is not None and entry.name == "depth-anything-v2-small" and folder == own


async def test_the_worker_makes_a_grey_depth_map_of_the_size_asked(local):
    """A PNG of exactly width×height, one grey in three channels, spread over 0–255, the same each time."""
    made = (await local.make_guide(photo(), "depth", 96, 64)).data
    depth = pixels(made)
    assert depth.shape == (64, 96, 3)
    assert (depth[..., 0] == depth[..., 1]).all() and (depth[..., 0] == depth[..., 2]).all()
    assert depth.min() == 0 and depth.max() == 255  # normalised, not constant
    assert (await local.make_guide(photo(), "depth", 96, 64)).data == made


@pytest.mark.parametrize("preprocess", ["depth", "openpose"])
async def test_an_annotated_guide_runs_end_to_end_and_the_map_is_stored(local, data_dir, preprocess):
    """`--cn tiny-controlnet --guide photo.png --preprocess depth|openpose`: the worker's map is the stored guide."""
    async with started_service(local, data_dir) as (service, _):
        job = await service.imagine(
            f"a fox --cn tiny-controlnet --guide photo.png --preprocess {preprocess} --steps 4", WHO, load=load
        )
        generation = await job.result()
    assert generation.status == "done" and len(generation.images) == 1
    control = generation.request.controlnets[0]
    assert control.preprocess == preprocess and control.source is not None and control.source != control.guide
    stored = (data_dir / input_path(control.guide)).read_bytes()
    expected = (await local.make_guide(photo(), preprocess, generation.request.width, generation.request.height)).data
    assert (pixels(stored) == pixels(expected)).all()
    assert not (pixels(stored) == pixels((data_dir / input_path(control.source)).read_bytes())).all()


async def test_an_annotator_that_cannot_run_is_one_sentence_and_the_worker_goes_on(local, data_dir):
    """An operator's folder whose files are no model: the worker answers why, and the next guide is made."""
    folder = data_dir / "annotators" / "depth-anything-v2-small"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    try:
        with pytest.raises(BackendUnavailable) as failed:
            await local.make_guide(photo(), "depth", 64, 64)
    finally:
        shutil.rmtree(data_dir / "annotators")
    assert "the depth annotator could not make the guide map" in str(failed.value)
    assert str(folder) not in str(failed.value)  # users see no server paths
    assert pixels((await local.make_guide(photo(), "depth", 64, 64)).data).shape == (64, 64, 3)


@pytest.mark.parametrize("preprocess", ["depth", "openpose"])
async def test_without_annotator_files_it_is_one_sentence_and_nothing_queued(tiny_data_dir, tmp_path, preprocess):
    """No annotator with files in place: refused before anything is stored or sent to a worker."""
    data_dir = data_dir_with_tiny(tmp_path, tiny_data_dir)
    backend = LocalBackend(NO_TINY, data_dir, device="cpu")
    async with started_service(backend, data_dir, catalog=NO_TINY) as (service, _):
        with pytest.raises(InvalidOption) as refused:
            await service.imagine(
                f"a fox --cn tiny-controlnet --guide photo.png --preprocess {preprocess}", WHO, load=load
            )
        assert await service.history(WHO) == []
    message = str(refused.value)
    assert message.startswith(f"--preprocess '{preprocess}' needs its annotator"), message
    assert "catalog annotator" in message and message.count(". ") == 0
    assert not (data_dir / "inputs").exists()
    assert backend.worker_pid is None
    await backend.aclose()


def pose_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "PNG" and opened.mode == "RGB" and opened.size == (width, height)
        return np.asarray(opened)


async def test_openpose_is_offered_by_the_tiny_vitpose_and_an_operators_wins(local, data_dir, tmp_path):
    """tiny-pose once the tiny model is built; the operator's ViTPose folder first once it holds a model."""
    assert "openpose" in LocalBackend(CATALOG, data_dir).guide_preprocessors
    assert "openpose" not in LocalBackend(NO_TINY, data_dir).guide_preprocessors
    own = tmp_path / "annotators" / "vitpose-base-simple"
    own.mkdir(parents=True)
    (tmp_path / "models").symlink_to(data_dir / "models", target_is_directory=True)
    (own / "config.json").write_text("{}", encoding="utf-8")
    entry, folder = find_annotator(CATALOG, tmp_path, "openpose") or (None, None)
    assert entry is not None and entry.name == "vitpose-base-simple" and folder == own


async def test_the_worker_makes_an_openpose_map_of_the_size_asked(local):
    """A PNG of exactly width×height, RGB, mostly black with coloured limbs, the same each time."""
    made = (await local.make_guide(photo(), "openpose", 256, 192)).data
    pose = pose_pixels(made, 256, 192)
    black = (pose.sum(axis=-1) == 0).mean()
    assert 0.5 < black < 1.0, black  # random heatmaps still pass the threshold somewhere
    assert (await local.make_guide(photo(), "openpose", 256, 192)).data == made


async def test_the_tiny_vitpose_is_loaded_once_and_draws_the_same_map(tiny_data_dir):
    """Two maps from one folder: one load, the same bytes; a 96×64 map is 96×64."""
    annotators = Annotators("cpu")
    folder = tiny.tiny_root(tiny_data_dir) / "pose"
    made = annotators.make(folder, "openpose", photo(), 256, 192)
    assert annotators.make(folder, "openpose", photo(), 256, 192) == made
    assert annotators.loads == 1
    assert pose_pixels(annotators.make(folder, "openpose", photo(), 96, 64), 96, 64).shape == (64, 96, 3)
    assert annotators.loads == 1


def save_tiny_detector(folder: Path, labels: dict[int, str]) -> None:
    """Save a random-weight RT-DETR (8-wide ResNet, 16-wide encoder and decoder, 10 queries) and its processor."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessorPil, RTDetrResNetConfig

    torch.manual_seed(0)
    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[8, 8, 8], d_model=16,
        encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=10, decoder_in_channels=[16, 16, 16],
        decoder_layers=1, encoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        decoder_n_points=2, num_denoising=0, anchor_image_size=None,
        num_labels=len(labels), id2label=labels, label2id={name: index for index, name in labels.items()},
    )  # fmt: skip
    RTDetrForObjectDetection(config).eval().save_pretrained(folder)
    RTDetrImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)


@pytest.mark.parametrize(("labels", "drawn"), [({0: "person", 1: "cat"}, True), ({0: "cat", 1: "dog"}, False)])
async def test_a_detector_beside_the_vitpose_finds_the_people_it_poses(tiny_data_dir, tmp_path, labels, drawn):
    """With detector/: each person it finds is posed (another map than the whole image's); no person, a black map."""
    folder = tmp_path / "pose"
    shutil.copytree(tiny.tiny_root(tiny_data_dir) / "pose", folder)
    whole = Annotators("cpu").make(folder, "openpose", photo(), 256, 192)
    save_tiny_detector(folder / "detector", labels)
    annotators = Annotators("cpu")
    made = pose_pixels(annotators.make(folder, "openpose", photo(), 256, 192), 256, 192)
    assert annotators.loads == 1
    if drawn:
        assert made.any() and made.tobytes() != pose_pixels(whole, 256, 192).tobytes()
    else:
        assert not made.any()
