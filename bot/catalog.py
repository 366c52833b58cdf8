"""The catalog: every model, refiner, inpainter, VAE, LoRA, ControlNet, style… a user can name.

Chat users only ever name catalog entries; nothing typed in chat is loaded
from a path or URL. Each entry carries its architecture and one identifier
per backend (`local`, `runware`, `modelslab`).

`local` is one of: a Hugging Face repo id (``org/name``), ``tiny:<part>`` for
the offline random-weight model that `inference.tiny` builds, or a path to a
diffusers folder or ``.safetensors`` file (absolute, or relative to the data
directory when it starts with ``./``). An ``upscaler`` (architecture ``esrgan``) is a
Real-ESRGAN network's ``.safetensors`` or ``.pth`` file: a path, ``tiny:<part>``, or a repo id
with the file in `weight_name`; the operator's ``IMAGEBOT_UPSCALER`` picks the one local
upscales run (`bot.service.ImageService.upscale`). An ``annotator`` makes the guide map its
`preprocess` names (``depth``: a transformers depth-estimation folder, Depth Anything or DPT) for
ControlNets on the local backend; its `local` is a folder on this machine (a path) or ``tiny:<part>``,
never a repo id, so that no annotator is downloaded while a request waits: the operator puts the
files there, and the local backend offers the preprocessing only while they are present. A
``captioner`` (architecture ``blip``: a transformers BLIP captioning folder) puts an image into words
for ``/describe`` on the local backend; its `local` follows the annotators' rule, for the same reason.

A model's ``inpainter`` names an ``inpainter`` entry (architecture ``sdxl-inpainting``): SDXL's
inpainting UNet, which reads the mask and the kept pixels besides the noise, so that what it paints
continues what is kept. It repaints the model's masks and outpaints in its place (see
`bot.service.ImageService.submit`); the rest (text encoders, VAE) stays the model's.

A ``controlnet`` with ``ip_adapter = true`` is an IP-Adapter (A1111 lists it among the ControlNet
units): its guide is an image prompt, read by the CLIP image encoder in `image_encoder`, which
lends the new image the guide's look and content rather than its outlines.

A ``style`` is words, not weights (A1111's styles): its `prompt` holds ``{prompt}`` where the
user's prompt goes (without it, the style's words follow the prompt), and its `negative` is added
to the user's negative prompt. It needs no architecture and runs on every backend.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import InvalidOption, shown

__all__ = ["KINDS", "Catalog", "CatalogEntry", "Kind", "load_catalog"]

# The extensions of the weight files whose names other tools write (A1111's checkpoints, LoRAs, VAEs).
_WEIGHT_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# A1111's short hash of a file, in brackets after its name (``sd_xl_refiner_1.0 [7440042bbd]``).
_HASH = re.compile(r"[0-9A-Fa-f]{8,64}")
# The longest name looked up: a file's is far shorter, and an image's text is anyone's.
_MOST_WRITTEN = 300

Kind = Literal[
    "model", "refiner", "inpainter", "vae", "lora", "embedding", "controlnet", "upscaler", "annotator", "captioner",
    "style",
]  # fmt: skip
KINDS: tuple[Kind, ...] = get_args(Kind)


class CatalogEntry(BaseModel):
    """One named thing a user can ask for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    kind: Kind
    architecture: str = ""  # every kind's but a style's (checked by the catalog)
    description: str = ""
    local: str | None = None
    weight_name: str | None = None
    runware: str | None = None
    modelslab: str | None = None
    # models
    default_steps: int | None = Field(default=None, ge=1, le=100)
    default_scheduler: str | None = None
    default_cfg: float | None = Field(default=None, ge=0, le=50)
    width: int | None = None
    height: int | None = None
    refiner: str | None = None
    # The inpainter that repaints this model's masks and outpaints, an `inpainter` entry.
    inpainter: str | None = None
    # The IP-Adapter that blends images for this model (`/blend`), a controlnet with ip_adapter.
    blend: str | None = None
    # Where the model runs when not on the configured IMAGEBOT_BACKEND (a model only a hosted API has).
    backend: Literal["local", "runware", "modelslab"] | None = None
    # LoRAs and embeddings
    trigger_words: tuple[str, ...] = ()
    token: str | None = None
    # ControlNets: the guide preprocessing they were trained on (canny, depth, …; None: any map);
    # annotators: the one they make
    preprocess: str | None = None
    # An IP-Adapter among the ControlNets (A1111's IP-Adapter unit, Runware's ipAdapters): its guide is
    # an image prompt that an image encoder reads, never a map. `weight_name` is its weight file in
    # `local`; `image_encoder` the encoder's folder inside `local` (``models/image_encoder``).
    ip_adapter: bool = False
    image_encoder: str | None = None
    # styles: the words around the user's prompt (``{prompt}`` where it goes) and the negative words
    prompt: str | None = Field(default=None, min_length=1, max_length=1000)
    negative: str | None = Field(default=None, min_length=1, max_length=1000)
    # What an image's parameters call it besides its name, for PNG info (`Catalog.find_written`): the
    # file names that A1111, Forge and ComfyUI write (``sd_xl_base_1.0``) and A1111's short hash
    # (the file's SHA-256, its first 10 hex digits).
    aliases: tuple[str, ...] = ()


class Catalog:
    """Entries by kind and name, with "did you mean" lookups."""

    def __init__(self, entries: list[CatalogEntry]) -> None:
        self._by_kind: dict[str, dict[str, CatalogEntry]] = {kind: {} for kind in KINDS}
        for entry in entries:
            if (entry.kind == "style") != (entry.prompt is not None or entry.negative is not None) or (
                entry.kind != "style" and not entry.architecture
            ):
                raise ValueError(
                    f"{entry.kind} {entry.name!r}: a style needs a prompt or a negative;"
                    " every other kind an architecture, and neither of those"
                )
            if entry.ip_adapter != (entry.kind == "controlnet" and entry.image_encoder is not None) or (
                entry.ip_adapter and entry.preprocess is not None
            ):
                raise ValueError(
                    f"{entry.kind} {entry.name!r}: an IP-Adapter is a controlnet with an image_encoder and no"
                    " preprocess (its guide is an image prompt, not a map); only an IP-Adapter has an image_encoder"
                )
            self._by_kind[entry.kind][entry.name] = entry
        for model in self._by_kind["model"].values():
            if model.refiner is not None and model.refiner not in self._by_kind["refiner"]:
                raise ValueError(f"model {model.name!r} names unknown refiner {model.refiner!r}")
            # A subset (`only`) may leave the blend out: /blend then says the model has none here.
            blend = self._by_kind["controlnet"].get(model.blend or "")
            if blend is not None and not blend.ip_adapter:
                raise ValueError(f"model {model.name!r}: blend names {model.blend!r}, which is not an IP-Adapter")
        for kind, named in self._by_kind.items():
            # An alias names one entry: PNG info would otherwise pick between two by their order.
            owners: dict[str, str] = {name: name for name in named}
            for entry in named.values():
                for alias in {alias.lower() for alias in entry.aliases} - {entry.name}:
                    if owners.setdefault(alias, entry.name) != entry.name:
                        raise ValueError(f"{kind} {entry.name!r}: alias {alias!r} is {kind} {owners[alias]!r}'s too")
        for annotator in self._by_kind["annotator"].values():
            if annotator.preprocess is None:
                raise ValueError(f"annotator {annotator.name!r} names no preprocess (the guide map it makes)")
        for entry in [*self._by_kind["annotator"].values(), *self._by_kind["captioner"].values()]:
            if entry.local is not None and not _is_path_or_tiny(entry.local):
                raise ValueError(
                    f"{entry.kind} {entry.name!r}: local must be a folder (absolute, or ./ under the data dir)"
                    f" or tiny:<part>; {entry.kind}s are never downloaded while a request waits"
                )

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        """Build a catalog from the text of a models.toml (tables `[kind.name]`)."""
        data = tomllib.loads(text)
        entries = []
        for kind, table in data.items():
            if kind not in KINDS:
                raise ValueError(f"unknown catalog section {kind!r}; expected one of {', '.join(KINDS)}")
            for name, fields in table.items():
                try:
                    entries.append(CatalogEntry(name=name, kind=kind, **fields))
                except ValidationError as error:
                    raise ValueError(f"catalog entry {kind}.{name} is invalid: {error}") from error
        catalog = cls(entries)
        for model in catalog.entries("model"):
            if model.blend is not None and catalog.find("controlnet", model.blend) is None:
                raise ValueError(f"model {model.name!r}: blend names {model.blend!r}, which is not an IP-Adapter")
            # A subset (`only`) may leave it out, as the blend: masks then repaint with the model itself.
            if model.inpainter is not None and catalog.find("inpainter", model.inpainter) is None:
                raise ValueError(f"model {model.name!r} names unknown inpainter {model.inpainter!r}")
        return catalog

    def only(self, keep: Callable[[CatalogEntry], bool]) -> Catalog:
        """Return a catalog of the entries `keep` is true of."""
        return Catalog([entry for kind in KINDS for entry in self.entries(kind) if keep(entry)])

    def names(self, kind: Kind) -> list[str]:
        """Return every name of one kind, sorted."""
        return sorted(self._by_kind[kind])

    def entries(self, kind: Kind) -> Iterator[CatalogEntry]:
        """Iterate over the entries of one kind, sorted by name."""
        return (self._by_kind[kind][name] for name in self.names(kind))

    def find(self, kind: Kind, name: str) -> CatalogEntry | None:
        """Return the entry of that kind and name (case-insensitive), or None."""
        return self._by_kind[kind].get(name.strip().lower())

    def find_written(self, kind: Kind, written: str, file_hash: str = "") -> CatalogEntry | None:
        """Return the entry an image's parameters name as `written`, or None.

        As A1111, Forge and ComfyUI write it: the entry's name, one of its `aliases`, or the stem of its
        weight file (`weight_name`, or `local` where that is a file), any case, with or without a folder,
        a file extension and A1111's ``[hash]`` after it (``sd_xl_refiner_1.0 [7440042bbd]``); or by that
        hash, or by `file_hash` (A1111's ``Model hash``).
        """
        name, bracketed = written.strip(), ""
        if len(name) > _MOST_WRITTEN:
            return None
        head, bracket, tail = name.rpartition("[")
        if bracket and tail.endswith("]") and _HASH.fullmatch(tail[:-1]):
            name, bracketed = head.strip(), tail[:-1]
        stem = PurePosixPath(name.replace("\\", "/")).name.lower()
        names = {stem, stem.rsplit(".", 1)[0]} if stem.endswith(_WEIGHT_FILES) else {stem}
        hashes = {found.lower() for found in (bracketed, file_hash.strip()) if found}
        for entry in self.entries(kind):
            known = {entry.name, *(alias.lower() for alias in entry.aliases)}
            for file in (entry.weight_name, entry.local):
                if file and file.lower().endswith(_WEIGHT_FILES):
                    known.add(PurePosixPath(file).name.lower().rsplit(".", 1)[0])
            if known & names or known & hashes:
                return entry
        return None

    def find_civitai(self, kind: Kind, version: int) -> CatalogEntry | None:
        """Return the entry whose Runware AIR is that Civitai model version (``civitai:101055@128078``), or None."""
        air = re.compile(rf"civitai:\d+@{version}")
        return next((entry for entry in self.entries(kind) if entry.runware and air.fullmatch(entry.runware)), None)

    def is_ip_adapter(self, name: str) -> bool:
        """Tell whether the ControlNet of that name is an IP-Adapter (its guide an image prompt, not a map)."""
        entry = self.find("controlnet", name)
        return entry is not None and entry.ip_adapter

    def get(self, kind: Kind, name: str, option: str | None = None) -> CatalogEntry:
        """Return the entry or raise `InvalidOption` naming close matches.

        Args:
            kind: which table to look in.
            name: what the user typed.
            option: the option name to blame in the error (defaults to `kind`).
        """
        entry = self.find(kind, name)
        if entry is not None:
            return entry
        known = self.names(kind)
        close = difflib.get_close_matches(name.strip().lower(), known, n=3, cutoff=0.5)
        reason = f"'{shown(name)}' is not in the catalog"
        if not close:
            reason += f" (known: {', '.join(known)})" if len(known) <= 8 else f" ({len(known)} known)"
        raise InvalidOption(option or kind, reason, close)

    def search(self, kind: Kind, text: str, limit: int = 25) -> list[CatalogEntry]:
        """Return entries whose name, description or trigger words contain `text` (for autocomplete)."""
        needle = text.strip().lower()
        found = [
            entry
            for entry in self.entries(kind)
            if needle in entry.name
            or needle in entry.description.lower()
            or any(needle in word.lower() for word in entry.trigger_words)
        ]
        found.sort(key=lambda entry: (not entry.name.startswith(needle), entry.name))
        return found[:limit]


def _is_path_or_tiny(local: str) -> bool:
    """Tell whether a `local` id is a path on this machine or a tiny part, not a repo id."""
    return local.startswith(("./", "/", "tiny:"))


def load_catalog(path: Path | None = None) -> Catalog:
    """Read a models.toml; without a path, the catalog shipped with the package."""
    source = resources.files("bot").joinpath("models.toml") if path is None else path
    return Catalog.from_toml(source.read_text(encoding="utf-8"))
