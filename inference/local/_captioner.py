"""The captioner: the network that puts a user's image into words for ``/describe`` (BLIP).

A catalog ``captioner`` names a folder of BLIP captioning weights in transformers' format
(`bot.catalog`; Salesforce/blip-image-captioning-large as its hub repository holds it). The bot
process decides which one describes (`find_captioner`, no torch): the first whose files are on
this machine, an operator's own before the tiny random-weight one, which counts only once the
tiny model is built. The worker process loads it once (`Captioners`) and runs it:

1. the image goes through the captioner's own processor (BLIP's: 384² for the real one, CLIP's
   normalisation) on the worker's device and dtype;
2. the text decoder writes the caption from ``[DEC]`` by beam search (`GENERATION`), the same
   words for the same image every time; asked for more, it then writes others by nucleus sampling
   (`SAMPLING`, BLIP's own example of varied captions), seeded by the image's bytes, so the same
   image gets the same words again;
3. the tokens are decoded without the special ones, and BLIP's made-up words are dropped
   (`clean_caption`).
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

from bot.catalog import Catalog, CatalogEntry
from bot.errors import InvalidOption
from inference.local._folders import first_present

__all__ = ["GENERATION", "SAMPLING", "Captioners", "captioner_folder", "clean_caption", "find_captioner"]

# How the decoder writes a caption. Beam search, not sampling, so one image always gets the same
# words (an operator's generation_config.json that samples is overridden). 3 beams, and at least 10
# tokens, are BLIP's own captioning defaults; A1111's interrogate asks for 24 to 48 with one beam,
# and a minimum that high makes BLIP pad its sentence ("… with a … and a …"), where its loops and
# made-up words come from. 48 tokens (A1111's maximum) hold any sentence BLIP-large means to write.
# No trigram twice: beam search on BLIP likes "on a couch on a couch"; a caption never needs it.
GENERATION: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 3,
    "min_length": 10,
    "max_length": 48,
    "no_repeat_ngram_size": 3,
}
# Other ways to say it: nucleus sampling over the 90 % likeliest words (BLIP's card's example), the
# beam's bounds; different words each draw, the same draws for the same seed.
SAMPLING: dict[str, Any] = {
    "do_sample": True,
    "top_p": 0.9,
    "min_length": 10,
    "max_length": 48,
    "no_repeat_ngram_size": 3,
}
# BLIP-large's made-up words, learnt from captions of mangled names: "arafed view of a city", "araffe sitting".
_ARTEFACT = re.compile(r"ara+f+(?:e|ed|es|y|ly)?", re.IGNORECASE)


def find_captioner(catalog: Catalog, data_dir: Path) -> tuple[CatalogEntry, Path] | None:
    """Return the catalog captioner that describes here and its folder; None when none is present.

    An operator's captioner wins over a tiny one; among the rest, the first by name.
    """
    return first_present(catalog.entries("captioner"), data_dir)


def captioner_folder(catalog: Catalog, data_dir: Path) -> Path:
    """Return the folder of the captioner that describes here (the worker's and the replicas' lookup).

    Raises:
        InvalidOption: no catalog captioner has its files in place (option ``describe``).
    """
    found = find_captioner(catalog, data_dir)
    if found is None:
        raise InvalidOption(
            "describe", "needs a catalog captioner whose files are in place (see docs/configuration.md)"
        )
    return found[1]


def clean_caption(text: str) -> str:
    """Return a decoded caption as one line of words, without BLIP's made-up words ("arafed", "araffe"…).

    They mean nothing wherever they stand, most often first ("arafed man sitting on a bench").
    """
    return " ".join(word for word in text.split() if not _ARTEFACT.fullmatch(word.strip(".,;:!?")))


class Captioners:
    """The captioners the worker has loaded, by folder; each is loaded once (imports torch).

    Args:
        device: the torch device they run on (the worker's).
        dtype: the torch dtype their weights are loaded in (the worker's: BLIP-large is 470M weights).
    """

    def __init__(self, device: Any, dtype: Any) -> None:
        self.device = device
        self.dtype = dtype
        self._loaded: dict[str, tuple[Any, Any]] = {}  # folder -> (model, processor)
        self.loads = 0

    def describe(self, folder: Path, image: bytes, count: int = 1) -> list[str]:
        """Return `count` captions of `image` (PNG bytes) by the captioner in `folder`, the beam's first.

        Each is words, possibly none; two may be alike (the caller says each once).
        """
        import torch
        from PIL import Image

        model, processor = self._load(folder)
        with Image.open(io.BytesIO(image)) as opened:
            rgb = opened.convert("RGB")
        # 1. the captioner's own preprocessing, in the weights' dtype
        inputs = processor(images=rgb, return_tensors="pt").to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            # 2. the decoder's words, by beam search
            found = [model.generate(**inputs, **GENERATION)[0]]
            if count > 1:
                # ... and by sampling, seeded by the image; the process's random state is left as it was.
                device = torch.device(self.device)
                seed = int.from_bytes(hashlib.sha256(image).digest()[:8]) >> 1
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(seed)
                    found += list(model.generate(**inputs, **SAMPLING, num_return_sequences=count - 1))
        # 3. words only
        return [clean_caption(processor.decode(tokens, skip_special_tokens=True)) for tokens in found]

    def _load(self, folder: Path) -> tuple[Any, Any]:
        """Return a captioner's model and processor, loaded once, never downloaded."""
        key = str(folder)
        if key not in self._loaded:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=self.dtype)
            processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
            self._loaded[key] = (model.to(self.device).eval(), processor)
            self.loads += 1
        return self._loaded[key]
