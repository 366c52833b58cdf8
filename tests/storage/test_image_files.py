"""Image files: atomic saves in id buckets, reads, deletes, and paths that cannot escape the data dir."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from bot.ports import ImageStore
from storage import ImageFiles

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def test_save_writes_bucketed_file_and_returns_sha256(tmp_path):
    """save puts <id>-<index>.<ext> in the id // 1000 bucket and returns its relative path and hash."""
    files = ImageFiles(tmp_path)
    relative, digest = await files.save(12345, 2, PNG, "png")
    assert relative == "images/12/12345-2.png"
    assert digest == hashlib.sha256(PNG).hexdigest()
    assert (tmp_path / "images" / "12" / "12345-2.png").read_bytes() == PNG


async def test_read_returns_saved_bytes(tmp_path):
    """read gives back exactly what save wrote."""
    files = ImageFiles(tmp_path)
    relative, _ = await files.save(7, 0, PNG, "webp")
    assert await files.read(relative) == PNG
    assert files.path(relative) == (tmp_path / "images" / "0" / "7-0.webp").resolve()


async def test_save_replaces_and_leaves_no_temporary_files(tmp_path):
    """Saving the same image twice keeps the newest bytes and no temporary file."""
    files = ImageFiles(tmp_path)
    await files.save(1, 0, b"old", "png")
    relative, digest = await files.save(1, 0, b"new", "png")
    assert await files.read(relative) == b"new"
    assert digest == hashlib.sha256(b"new").hexdigest()
    assert [p.name for p in (tmp_path / "images" / "0").iterdir()] == ["1-0.png"]


async def test_concurrent_saves_of_one_image_never_tear(tmp_path):
    """Concurrent writers of one path leave one writer's whole file, never a mix."""
    files = ImageFiles(tmp_path)
    payloads = [bytes([n]) * 200_000 for n in range(8)]
    await asyncio.gather(*(files.save(3, 0, data, "png") for data in payloads))
    assert await files.read("images/0/3-0.png") in payloads


async def test_delete_removes_file_and_is_idempotent(tmp_path):
    """delete unlinks the file; deleting it again is not an error."""
    files = ImageFiles(tmp_path)
    relative, _ = await files.save(5, 1, PNG, "jpg")
    await files.delete(relative)
    assert not files.path(relative).exists()
    await files.delete(relative)
    with pytest.raises(FileNotFoundError):
        await files.read(relative)


@pytest.mark.parametrize("ext", ["", ".png", "../x", "png/..", "PNG", "a" * 11])
async def test_save_rejects_odd_extensions(tmp_path, ext):
    """Only a short lowercase word is an extension, so no name can leave the bucket."""
    with pytest.raises(ValueError, match="ext"):
        await ImageFiles(tmp_path).save(1, 0, PNG, ext)


@pytest.mark.parametrize(("generation_id", "index"), [(-1, 0), (1, -1)])
async def test_save_rejects_negative_numbers(tmp_path, generation_id, index):
    """Negative ids or indexes are caller bugs."""
    with pytest.raises(ValueError, match="negative"):
        await ImageFiles(tmp_path).save(generation_id, index, PNG, "png")


@pytest.mark.parametrize("relative", ["/etc/passwd", "../secret.png", "images/../../x", "", "."])
def test_path_refuses_to_leave_the_data_dir(tmp_path, relative):
    """A stored path that is absolute or climbs out is refused."""
    with pytest.raises(ValueError, match="inside the data directory"):
        ImageFiles(tmp_path).path(relative)


def test_image_files_is_an_image_store(tmp_path):
    assert isinstance(ImageFiles(tmp_path), ImageStore)


async def test_save_input_keeps_it_by_content(tmp_path):
    """An input lives at inputs/<first two hex digits>/<sha256>.png and is read back by its hash."""
    files = ImageFiles(tmp_path)
    digest = await files.save_input(PNG)
    assert digest == hashlib.sha256(PNG).hexdigest()
    assert (tmp_path / "inputs" / digest[:2] / f"{digest}.png").read_bytes() == PNG
    assert await files.read_input(digest) == PNG


async def test_saving_an_input_again_writes_nothing(tmp_path):
    """The same bytes twice are one file, left as it was."""
    files = ImageFiles(tmp_path)
    digest = await files.save_input(PNG)
    kept = files.input_path(digest)
    before = kept.stat()
    assert await files.save_input(PNG) == digest
    after = kept.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]


async def test_delete_input_removes_it_and_is_idempotent(tmp_path):
    files = ImageFiles(tmp_path)
    digest = await files.save_input(PNG)
    await files.delete_input(digest)
    await files.delete_input(digest)
    with pytest.raises(FileNotFoundError):
        await files.read_input(digest)


@pytest.mark.parametrize(
    "sha256",
    ["", "a" * 63, "a" * 65, "A" * 64, "g" * 64, "../" + "a" * 61, "aa/" + "a" * 61, "a" * 64 + "\n", "/" + "a" * 63],
)
async def test_a_malformed_input_name_is_refused(tmp_path, sha256):
    """Only 64 lowercase hex digits name an input, so no name reaches another path."""
    files = ImageFiles(tmp_path)
    for call in (files.read_input, files.delete_input):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            await call(sha256)
