"""/describe on the local backend: a catalog captioner (BLIP) run by the real worker process."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image, ImageDraw

from bot.catalog import KINDS, Catalog, load_catalog
from bot.describe import Description
from bot.errors import BackendUnavailable, InvalidOption
from bot.ports import DescribingBackend
from inference import tiny
from inference.local import LocalBackend
from inference.local._captioner import Captioners, captioner_folder, clean_caption, find_captioner

pytest.importorskip("transformers")

CATALOG = load_catalog()
# The shipped catalog without its tiny captioner: the operator's BLIP, its folder empty.
NO_TINY = Catalog([entry for kind in KINDS for entry in CATALOG.entries(kind) if entry.name != "tiny-captioner"])
REFUSAL = "Describe needs a catalog captioner whose files are in place (see docs/configuration.md)."
# What the tiny captioner may write: the words its tokenizer was made of.
WORDS = set(tiny._CAPTION_WORDS)


def photo(color: tuple[int, int, int] = (30, 90, 160)) -> bytes:
    """A yellow disc on a coloured ground, 80×60: something for a captioner to look at."""
    image = Image.new("RGB", (80, 60), color)
    ImageDraw.Draw(image).ellipse((20, 10, 60, 50), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_dir_with_tiny(root: Path, tiny_data_dir: Path) -> Path:
    """A fresh data directory that sees the session's tiny model (built once) and nothing else."""
    data_dir = root / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(tiny_data_dir / "models", target_is_directory=True)
    return data_dir


@pytest.mark.parametrize(
    ("caption", "cleaned"),
    [
        ("arafed man sitting on a bench", "man sitting on a bench"),
        ("araffe standing in a field", "standing in a field"),
        ("Arafed araffe view of a city at night", "view of a city at night"),
        ("there is a arafed cat on a couch", "there is a cat on a couch"),
        ("arafly, a dog", "a dog"),
        ("a giraffe and an arab horse in a field", "a giraffe and an arab horse in a field"),
        ("  a fox\n in the   snow ", "a fox in the snow"),
        ("arafed", ""),
    ],
)
def test_blips_made_up_words_are_dropped(caption, cleaned):
    """BLIP-large's 'arafed'/'araffe' go wherever they stand; real words that look like them stay."""
    assert clean_caption(caption) == cleaned


def test_the_tiny_captioner_is_found_once_the_tiny_model_is_built(tiny_data_dir, tmp_path):
    """tiny-captioner once the tiny model is built; without the build, or without it in the catalog, none."""
    entry, folder = find_captioner(CATALOG, tiny_data_dir) or (None, None)
    assert entry is not None and entry.name == "tiny-captioner"
    assert folder == tiny.tiny_root(tiny_data_dir) / "captioner"
    assert captioner_folder(CATALOG, tiny_data_dir) == folder
    assert find_captioner(NO_TINY, tiny_data_dir) is None
    assert find_captioner(CATALOG, tmp_path) is None  # no tiny model built here
    assert not tiny.is_built(tmp_path)  # and looking built none


def test_an_operators_captioner_wins_once_its_folder_holds_a_model(tiny_data_dir, tmp_path):
    """blip-large's folder under the data dir: not while empty, first once it holds a config.json."""
    data_dir = data_dir_with_tiny(tmp_path, tiny_data_dir)
    own = data_dir / "captioners" / "blip-image-captioning-large"
    own.mkdir(parents=True)
    assert find_captioner(CATALOG, data_dir)[0].name == "tiny-captioner"  # an empty folder
    (own / "config.json").write_text("{}", encoding="utf-8")
    entry, folder = find_captioner(CATALOG, data_dir) or (None, None)
    assert entry is not None and entry.name == "blip-large" and folder == own


@pytest.mark.parametrize(("catalog", "built"), [(NO_TINY, True), (CATALOG, False)], ids=["no-tiny-entry", "no-build"])
def test_without_captioner_files_describe_is_refused_in_one_sentence(tiny_data_dir, tmp_path, catalog, built):
    """check_describe names the option and what it needs, before any worker starts or any file is written."""
    data_dir = data_dir_with_tiny(tmp_path, tiny_data_dir) if built else tmp_path
    backend = LocalBackend(catalog, data_dir, device="cpu")
    assert isinstance(backend, DescribingBackend)
    with pytest.raises(InvalidOption) as refused:
        backend.check_describe()
    assert refused.value.option == "describe" and str(refused.value) == REFUSAL
    assert backend.worker_pid is None
    assert built or not any(tmp_path.iterdir())


def test_the_tiny_captioner_writes_words_the_same_each_time(tiny_data_dir):
    """Loaded once per folder; a caption of the tokenizer's words; the same image, the same words."""
    import torch

    captioners = Captioners("cpu", torch.float32)
    folder = tiny.tiny_root(tiny_data_dir) / "captioner"
    (text,) = captioners.describe(folder, photo())
    words = text.split()
    assert words and set(words) <= WORDS, text
    assert captioners.describe(folder, photo()) == [text]
    assert captioners.describe(folder, photo((200, 10, 10)))[0].split()
    assert captioners.loads == 1


def test_more_captions_are_sampled_after_the_beams_the_same_for_the_same_image(tiny_data_dir):
    """Asked for four: the beam's caption first, then three sampled ones, other words, the same for the same image;
    the process's random state is as it was (the images' noise comes from their seeds, not from it)."""
    import torch

    captioners = Captioners("cpu", torch.float32)
    folder = tiny.tiny_root(tiny_data_dir) / "captioner"
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    four = captioners.describe(folder, photo(), 4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(four) == 4 and four[0] == captioners.describe(folder, photo())[0]
    assert all(text.split() and set(text.split()) <= WORDS for text in four), four
    assert len(set(four)) > 1  # sampling says it otherwise
    assert captioners.describe(folder, photo(), 4) == four
    assert captioners.describe(folder, photo((200, 10, 10)), 4)[1:] != four[1:]


# -- through the worker process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    return data_dir_with_tiny(tmp_path_factory.mktemp("describe"), tiny_data_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(data_dir: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(CATALOG, data_dir, device="cpu")
    yield backend
    await backend.aclose()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_the_worker_describes_an_image_with_the_tiny_captioner(local, data_dir):
    """LocalBackend.describe: the worker's caption is the captioner's own words, free, the same each time."""
    import torch

    assert isinstance(local, DescribingBackend)
    local.check_describe()
    said = await local.describe(photo())
    assert isinstance(said, Description) and said.cost is None
    assert said.text.split() and set(said.text.split()) <= WORDS, said.text
    expected = Captioners("cpu", torch.float32).describe(tiny.tiny_root(data_dir) / "captioner", photo(), 4)
    assert list(said.texts) == expected  # Midjourney's four: the beam's, then three sampled
    assert await local.describe(photo()) == said


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("damage", ["config", "weights"])
async def test_a_captioner_that_cannot_run_is_one_sentence_and_the_worker_goes_on(local, data_dir, damage):
    """An operator's BLIP folder whose files are damaged: the worker says why, stays up, and describes next."""
    folder = data_dir / "captioners" / "blip-image-captioning-large"
    shutil.copytree(tiny.tiny_root(data_dir) / "captioner", folder)
    if damage == "config":
        (folder / "config.json").write_text("{not json", encoding="utf-8")
    else:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    await local.start()
    pid = local.worker_pid
    try:
        with pytest.raises(BackendUnavailable) as failed:
            await local.describe(photo())
    finally:
        shutil.rmtree(data_dir / "captioners")
    message = str(failed.value)
    assert message.startswith("The local backend could not describe the image: the captioner failed ("), message
    assert message.endswith("); imagebot doctor checks its files.") and message.count(". ") == 0
    assert str(folder) not in message  # users see no server paths
    assert (await local.describe(photo())).text.split()  # the tiny captioner again, on the same worker
    assert local.worker_pid == pid
