"""Image files under the data directory, written atomically off the event loop.

A generation's images live at ``images/<id // 1000>/<id>-<index>.<ext>``, so no
directory holds more than a few thousand files. The history stores that path
relative to the data directory, so the directory can move without a migration.

The images users send (an init image, a mask) are checked and normalized to PNG
by `bot.images` first, then kept by content at ``inputs/<ab>/<sha256>.png``
(``ab``: the hash's first two hex digits): the same picture sent twice, or used
by a reroll, is one file, and a request refers to it by its SHA-256 alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from pathlib import Path, PurePosixPath

from bot.images import input_path

__all__ = ["ImageFiles"]

_BUCKET_SIZE = 1000
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")


class ImageFiles:
    """Saves, reads and deletes the image files of generations and the input images users sent.

    Args:
        data_dir: the bot's data directory; images go in its ``images`` folder, inputs in ``inputs``.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self._root = Path(data_dir).resolve()

    async def save(self, generation_id: int, index: int, data: bytes, ext: str) -> tuple[str, str]:
        """Write one image atomically, replacing an earlier file of the same image.

        Args:
            generation_id: the generation the image belongs to.
            index: the image's index within the generation (0 for the first).
            data: the encoded image.
            ext: the file extension without a dot (``png``, ``jpg``, ``webp``).

        Returns:
            The path relative to the data directory (with ``/`` separators) and the
            SHA-256 of `data` in hex.

        Raises:
            ValueError: a negative id or index, or an extension that is not a short
                lowercase alphanumeric word.
        """
        if generation_id < 0 or index < 0:
            raise ValueError(f"generation id and index must not be negative, not {generation_id} and {index}")
        if not _EXTENSION.fullmatch(ext):
            raise ValueError(f"ext must be a short lowercase word such as 'png', not {ext!r}")
        bucket = str(generation_id // _BUCKET_SIZE)
        relative = PurePosixPath("images", bucket, f"{generation_id}-{index}.{ext}")
        digest = await asyncio.to_thread(_write_atomically, self._root / relative, data)
        return relative.as_posix(), digest

    def path(self, relative: str) -> Path:
        """Return the absolute path of a stored relative path.

        Raises:
            ValueError: the path is absolute or leads out of the data directory.
        """
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ValueError(f"not a path inside the data directory: {relative!r}")
        return self._root.joinpath(*pure.parts)

    async def read(self, relative: str) -> bytes:
        """Return the bytes of a stored image.

        Raises:
            FileNotFoundError: the file is gone.
        """
        return await asyncio.to_thread(self.path(relative).read_bytes)

    async def delete(self, relative: str) -> None:
        """Delete a stored image; a file that is already gone is not an error."""
        await asyncio.to_thread(self.path(relative).unlink, missing_ok=True)

    async def save_input(self, data: bytes) -> str:
        """Keep an input image by its content, atomically; return the SHA-256 of `data` in hex.

        Saving bytes already kept writes nothing: the name is the content's hash,
        so the file there holds exactly these bytes.
        """
        digest = hashlib.sha256(data).hexdigest()
        target = self.input_path(digest)
        if not await asyncio.to_thread(target.exists):
            await asyncio.to_thread(_write_atomically, target, data)
        return digest

    def input_path(self, sha256: str) -> Path:
        """Return the absolute path of the input image with that SHA-256.

        Raises:
            ValueError: `sha256` is not 64 lowercase hex digits (so it cannot name another path).
        """
        return self._root / input_path(sha256)

    async def read_input(self, sha256: str) -> bytes:
        """Return the bytes of a kept input image.

        Raises:
            FileNotFoundError: it is gone.
            ValueError: `sha256` is not 64 lowercase hex digits.
        """
        return await asyncio.to_thread(self.input_path(sha256).read_bytes)

    async def delete_input(self, sha256: str) -> None:
        """Delete a kept input image; one that is already gone is not an error.

        Raises:
            ValueError: `sha256` is not 64 lowercase hex digits.
        """
        await asyncio.to_thread(self.input_path(sha256).unlink, missing_ok=True)


def _write_atomically(target: Path, data: bytes) -> str:
    """Write `data` to `target` via a temporary file and a rename; return its SHA-256.

    Readers see the old file or the whole new one, never a part. The fsync comes
    before the rename so a crash cannot leave a committed history row pointing
    at an empty file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()
