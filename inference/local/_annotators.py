"""Annotators: the networks that make a ControlNet's guide map from a user's image (depth, for now).

A catalog ``annotator`` names the `preprocess` it makes and a folder of its weights in
transformers' format (`bot.catalog`). The bot process decides which one serves a
preprocessing (`find_annotator`, no torch): the first whose files are on this machine, an
operator's own before the tiny random-weight one, which counts only once the tiny model is
built. The worker process loads it once (`Annotators`) and runs it:

1. the image goes through the annotator's own image processor (Depth Anything's: aspect
   kept, sides multiples of 14) and the network;
2. the prediction is resized to the requested size (bicubic, as transformers'
   ``post_process_depth_estimation`` does);
3. it is scaled to 0–255, near bright: the relative depth these networks predict is already
   larger for nearer points (disparity), as the depth maps SDXL depth ControlNets were
   trained on; a metric one (larger is farther) is turned around;
4. it is saved as a PNG whose three channels are the same grey, like the canny maps.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bot.catalog import Catalog, CatalogEntry
from bot.errors import InvalidOption
from bot.request import Preprocess
from inference import tiny

__all__ = ["ANNOTATED", "Annotators", "annotator_folder", "find_annotator", "preprocessors", "weights_folder"]

# The preprocessings an annotator of ours can make: those transformers has a depth-estimation model for.
ANNOTATED: frozenset[Preprocess] = frozenset({"depth"})


def weights_folder(entry: CatalogEntry, data_dir: Path) -> Path | None:
    """Return the folder of an annotator's weights if they are on this machine, else None (building nothing)."""
    local = entry.local or ""
    if local.startswith("tiny:"):
        if not tiny.is_built(data_dir):
            return None
        folder, _ = tiny.resolve(local, data_dir)
    elif local.startswith("./"):
        folder = Path(data_dir) / local[2:]
    elif local.startswith("/"):
        folder = Path(local)
    else:
        return None
    return folder if (folder / "config.json").is_file() else None


def find_annotator(catalog: Catalog, data_dir: Path, preprocess: str) -> tuple[CatalogEntry, Path] | None:
    """Return the catalog annotator that makes `preprocess` here and its folder; None when none is present.

    An operator's annotator wins over a tiny one; among the rest, the first by name.
    """
    if preprocess not in ANNOTATED:
        return None
    candidates = [entry for entry in catalog.entries("annotator") if entry.preprocess == preprocess]
    candidates.sort(key=lambda entry: (entry.local or "").startswith("tiny:"))
    for entry in candidates:
        folder = weights_folder(entry, data_dir)
        if folder is not None:
            return entry, folder
    return None


def annotator_folder(catalog: Catalog, data_dir: Path, preprocess: str) -> Path:
    """Return the folder of the annotator that makes `preprocess` here (the worker's and the replicas' lookup).

    Raises:
        InvalidOption: no catalog annotator for it has its files in place.
    """
    found = find_annotator(catalog, data_dir, preprocess)
    if found is None:
        raise InvalidOption("preprocess", f"'{preprocess}' needs a catalog annotator whose files are in place")
    return found[1]


def preprocessors(catalog: Catalog, data_dir: Path) -> frozenset[Preprocess]:
    """Return the preprocessings whose annotator's files are on this machine now."""
    return frozenset(
        preprocess for preprocess in ANNOTATED if find_annotator(catalog, data_dir, preprocess) is not None
    )


class Annotators:
    """The annotators the worker has loaded, by folder; each is loaded once (imports torch).

    Args:
        device: the torch device they run on (the worker's).
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self.loads = 0

    def make(self, folder: Path, preprocess: str, image: bytes, width: int, height: int) -> bytes:
        """Return the `preprocess` map of `image` (PNG bytes) at `width`×`height`, as PNG bytes."""
        import numpy as np
        import torch
        from PIL import Image

        if preprocess not in ANNOTATED:
            raise ValueError(f"no annotator of ours makes {preprocess!r} maps")
        model, processor = self._load(folder)
        # 1. the annotator's own preprocessing and network
        with Image.open(io.BytesIO(image)) as opened:
            rgb = opened.convert("RGB")
        inputs = processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            predicted = model(**inputs).predicted_depth
        # 2. at the requested size
        depth = torch.nn.functional.interpolate(
            predicted.float().unsqueeze(1), size=(height, width), mode="bicubic", align_corners=False
        )[0, 0]
        # 3. 0–255, near bright
        if getattr(model.config, "depth_estimation_type", "relative") == "metric":
            depth = -depth
        low, high = depth.min(), depth.max()
        scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        gray = (scaled * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        # 4. one grey in three channels
        buffer = io.BytesIO()
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(buffer, format="PNG")
        return buffer.getvalue()

    def _load(self, folder: Path) -> tuple[Any, Any]:
        """Return an annotator's network and image processor, loaded from its folder once, never downloaded."""
        key = str(folder)
        if key not in self._loaded:
            import torch
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation

            # float32 whatever the worker's dtype: one small network, once per guide.
            model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            self._loaded[key] = (model.to(self.device).eval(), processor)
            self.loads += 1
        return self._loaded[key]
