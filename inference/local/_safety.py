"""The image check after generation: a classifier that flags NSFW images, run in the worker.

The default is diffusers' Stable Diffusion safety checker (``CompVis/stable-diffusion-safety-checker``,
a CLIP vision model compared with NSFW concept embeddings), loaded like the models: from the
Hugging Face cache, downloaded on first use unless ``HF_HUB_OFFLINE`` is set. The tiny model gets
the tiny random-weight checker that `inference.tiny` builds offline, so every code path runs in
tests; its thresholds pass every image. The check never changes the image: the server's policy
decides how a flagged image is shown.

A setting of the form ``module:callable`` names a factory instead: the worker imports it when it
starts (`load_checker`) and calls what it returns in place of the classifier, with the same
arguments (`SafetyChecker`). Tests flag or pass every image so (``tests.fakes.safety:flag_all``).

`checker_source` and `is_custom_checker` are pure, so ``imagebot doctor`` can tell which checker
will run without torch; `SafetyCheck` imports torch when it is made, in the worker process.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_CHECKER", "SafetyCheck", "SafetyChecker", "checker_source", "is_custom_checker", "load_checker"]

DEFAULT_CHECKER = "CompVis/stable-diffusion-safety-checker"
TINY_CHECKER = "tiny:safety-checker"
# ``package.module:callable``: dotted Python names, then one more after the colon.
_FACTORY = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class SafetyChecker(Protocol):
    """What the pipeline calls on a batch of decoded images: `SafetyCheck`, or what a custom factory returns."""

    def __call__(self, model_local: str, images: list[Any]) -> list[bool | None]:
        """Return a verdict per PIL image: True flagged, False passed, None not checked.

        Args:
            model_local: the job's model as the worker loads it (``tiny:base`` for the tiny model).
            images: the decoded images, in order.
        """
        ...


def is_custom_checker(setting: str) -> bool:
    """Return whether a safety checker setting names a factory (``module:callable``) rather than a checker."""
    return not setting.startswith("tiny:") and _FACTORY.fullmatch(setting) is not None


def load_checker(setting: str) -> SafetyChecker:
    """Import the factory a ``module:callable`` setting names and return the checker it makes.

    Raises:
        ValueError: the module or the callable cannot be imported, or it made something that is not callable.
    """
    module_name, _, name = setting.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"the safety checker factory {setting} cannot be imported: {error}") from error
    if not callable(factory):
        raise ValueError(f"the safety checker factory {setting} is a {type(factory).__name__}, not a callable")
    checker: SafetyChecker = factory()
    if not callable(checker):
        raise ValueError(f"the safety checker factory {setting} made a {type(checker).__name__}, not a checker")
    return checker


def checker_source(setting: str, model_local: str) -> str | None:
    """Return the checker to run on a model's images: a Hugging Face id, folder or ``tiny:`` id; None: off.

    Args:
        setting: ``auto`` (the tiny checker for the tiny model, else `DEFAULT_CHECKER`), ``off``,
            ``tiny``, or a Hugging Face id / folder of a `StableDiffusionSafetyChecker`; a custom
            factory (`is_custom_checker`) comes back as it is.
        model_local: the job's model as the worker loads it (``tiny:base`` for the tiny model).
    """
    if setting == "off":
        return None
    if setting == "tiny":
        return TINY_CHECKER
    if setting == "auto":
        return TINY_CHECKER if model_local.startswith("tiny:") else DEFAULT_CHECKER
    return setting


class SafetyCheck:
    """Loads safety checkers once and returns a verdict per image.

    Args:
        setting: what `checker_source` takes.
        resolve: maps a checker id to the folder or repo id ``from_pretrained`` takes (``tiny:`` ids).
        device, dtype: where the checker runs.
        hub_kwargs: ``from_pretrained`` options (the token).
    """

    def __init__(
        self, setting: str, resolve: Any, device: torch.device, dtype: torch.dtype, hub_kwargs: dict[str, Any]
    ) -> None:
        self._setting = setting
        self._resolve = resolve
        self._device = device
        self._dtype = dtype
        self._hub_kwargs = hub_kwargs
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def __call__(self, model_local: str, images: list[Any]) -> list[bool | None]:
        """Return True for each PIL image the checker flags (None for all when the check is off).

        Raises:
            OSError, ValueError: the checker's files cannot be loaded.
        """
        import numpy as np
        import torch

        source = checker_source(self._setting, model_local)
        if source is None or not images:
            return [None] * len(images)
        checker, processor = self._load(source)
        pixels = processor(images=[image.convert("RGB") for image in images], return_tensors="pt").pixel_values
        with torch.inference_mode():
            # The checker blacks out flagged entries of `images` in place: give it stand-ins, keep ours.
            stand_ins = [np.zeros((1, 1, 3)) for _ in images]
            _, flags = checker(clip_input=pixels.to(self._device, self._dtype), images=stand_ins)
        return [bool(flag) for flag in flags]

    def _load(self, source: str) -> tuple[Any, Any]:
        if source not in self._loaded:
            from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
            from transformers import CLIPImageProcessor

            folder = str(self._resolve(source))
            checker = StableDiffusionSafetyChecker.from_pretrained(folder, **self._hub_kwargs)
            checker.to(self._device, self._dtype).eval()
            # The CompVis repo ships its preprocessor config; CLIP's defaults are the same 224 px crop.
            try:
                processor = CLIPImageProcessor.from_pretrained(folder, **self._hub_kwargs)
            except OSError:
                processor = CLIPImageProcessor()
            self._loaded[source] = (checker, processor)
        return self._loaded[source]
