"""The images a request names: a previous result (``#12``, ``#12.2``) or a chat's file, read and checked.

`ImageInputs.load` reads every image of an ``/imagine`` (``--image``, ``--mask``, each ControlNet's
``--guide``), checks each as hostile bytes (`bot.images.check_image`), asks the backend's safety
checker about uploads where the server withholds flagged images, and turns guides into their
ControlNet's map (canny here; depth, openpose… by a backend that makes them). No image is stored
here (only which result an input came from is noted, for the gallery): the use case stores the
checked images once the whole request has passed (`bot.service.ImageService.submit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot import options
from bot.actions import format_image_ref, format_ref, parse_image_ref
from bot.admin import ServerAdmin
from bot.controls import PROBE, PROBE_SHA, Guide
from bot.errors import InvalidOption, shown
from bot.guides import CANNY_THRESHOLDS, make_guide
from bot.history import Generation, StoredImage
from bot.images import InputImage, check_image
from bot.jobs import Requester
from bot.ports import GenerationStore, GuideBackend, ImageCheckingBackend, ImageStore
from bot.request import SIDE, GenerationRequest, Preprocess
from bot.runner import JobRunner

__all__ = ["Admit", "ImageInputs", "ImageLoader", "Loaded", "Parse", "Shared", "Source"]

# Reads an image reference that is not a previous image: a chat's attachment, a console file.
ImageLoader = Callable[[str, str], Awaitable[bytes]]  # (reference as typed, option) → bytes
# Parses the request with these inputs and guides in place (`bot.options.parse_options`).
Parse = Callable[[options.Inputs | None, Sequence[Guide]], options.Parsed]
# The generation a user may act on by id (`ImageService`'s permission rule).
Source = Callable[[Requester, int, str], Awaitable[Generation]]
# Every check a request passes before it may cost anything (queue room, rules, backend, quota).
Admit = Callable[[Requester, GenerationRequest, Sequence[str]], Awaitable[object]]
# Stands for the image while the rest of a request is checked, before any image is read.


@dataclass
class Loaded:
    """What a request's images came to.

    Attributes:
        inputs: the start image (and mask) as the parser takes them; None without ``--image``.
        guides: each ControlNet's map and, when made here or by a backend, its source.
        images: every checked image the request names, to store once it passes.
        flagged: the references whose safety verdict is flagged, for the server's policy.
        costs: what a backend charged for the guide maps it made.
    """

    inputs: options.Inputs | None = None
    guides: list[Guide] = field(default_factory=list)
    images: list[InputImage] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)


@dataclass
class Shared:
    """What the prompts of one command (``a {red, blue} fox``) share as each loads its images.

    Attributes:
        maps: the guide maps made so far, by source, preprocessor, size and backend: a map the
            next prompt needs again is not made (nor paid for) again.
    """

    maps: dict[tuple[object, ...], InputImage] = field(default_factory=dict)


class ImageInputs:
    """Read, check and preprocess the images of requests.

    Args:
        generations, files: where previous results are found and read.
        runner: picks the backend that will run a request (its safety checker, its annotators).
        admin: the server's policy (whether flagged uploads are withheld).
        source: the permission rule: which generation a user may use by id.
        admit: the checks before a backend is paid for a guide map.
        max_bytes, max_pixels: the largest image a user may give.
        canny_thresholds: the canny map's hysteresis thresholds.
    """

    def __init__(
        self,
        *,
        generations: GenerationStore,
        files: ImageStore,
        runner: JobRunner,
        admin: ServerAdmin,
        source: Source,
        admit: Admit,
        max_bytes: int,
        max_pixels: int,
        canny_thresholds: tuple[int, int] = CANNY_THRESHOLDS,
    ) -> None:
        self._generations = generations
        self._files = files
        self._runner = runner
        self._admin = admin
        self._source = source
        self._admit = admit
        self.max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._canny = canny_thresholds

    async def load(
        self,
        who: Requester,
        refs: options.ImageRefs,
        parse: Parse,
        load: ImageLoader | None,
        shared: Shared | None = None,
    ) -> Loaded:
        """Load, check and (guides) preprocess the images `refs` names.

        Everything else is checked first, with a probe in each image's place, so a request that
        fails anyway reads no image; the probe also says how each guide is to be preprocessed.
        `shared` holds what the other prompts of the same command made.
        """
        shared = shared or Shared()
        loaded = Loaded()
        if refs.image is None and not refs.every_guide:
            return loaded
        probe = self.probe(refs, parse)
        uploads: list[tuple[str, InputImage]] = []  # files a chat gave (not #id): no verdict yet
        if refs.image is not None:
            image = await self._input(who, refs.image, "image", load, loaded.flagged)
            mask = await self._input(who, refs.mask, "mask", load, loaded.flagged) if refs.mask is not None else None
            loaded.images += [image] if mask is None else [image, mask]
            loaded.inputs = options.Inputs(image.sha256, image.width, image.height, mask.sha256 if mask else None)
            if parse_image_ref(refs.image) is None:
                uploads.append(("the uploaded image", image))
            if refs.every_guide:  # the size may follow the image's: a guide map is made at the real one
                probe = parse(loaded.inputs, [PROBE] * len(refs.every_guide))
        sources = []
        for ref, option in refs.every_guide:
            source = await self._input(who, ref, option, load, loaded.flagged)
            sources.append(source)
            if parse_image_ref(ref) is None:
                uploads.append((f"the uploaded {'style reference' if option == 'sref' else 'guide'}", source))
        # Before any guide map is made: a backend may charge for one.
        loaded.flagged += await self._flagged_uploads(who, probe.request, uploads)
        for source, control in zip(sources, probe.request.controlnets, strict=True):
            loaded.images.append(source)
            if control.preprocess == "none":
                loaded.guides.append(Guide(source.sha256))
            else:
                made = await self._make_guide(source, control.preprocess, probe.request, who, loaded, shared)
                loaded.images.append(made)
                loaded.guides.append(Guide(made.sha256, source.sha256))
        return loaded

    @staticmethod
    def probe(refs: options.ImageRefs, parse: Parse) -> options.Parsed:
        """Parse the request with a stand-in for each image it names: all but the images' own checks."""
        inputs = options.Inputs(PROBE_SHA, SIDE.low, SIDE.low) if refs.image is not None else None
        return parse(inputs, [PROBE] * len(refs.every_guide))

    async def of_result(self, generation_id: int, stored: StoredImage, option: str) -> InputImage:
        """Return a result's image (`pick`) checked as an input, noting which result the input came from."""
        image = await self.checked(await self._files.read(stored.path), option)
        await self._generations.note_input_source(image.sha256, generation_id, stored.index)
        return image

    async def checked(self, data: bytes, option: str) -> InputImage:
        """Check an image off the event loop: decoding a large one takes a while."""
        return await asyncio.to_thread(
            check_image,
            data,
            option=option,
            max_bytes=self.max_bytes,
            pixel_budget=self._max_pixels,
            mask=option == "mask",
        )

    @staticmethod
    def pick(generation: Generation, index: int, option: str) -> StoredImage:
        """Return image `index` of a result, or the sentence that says it has no such image."""
        ref = format_ref(generation.id)
        if not generation.images:
            raise InvalidOption(option, f"{ref} has no image ({generation.status})")
        if index >= len(generation.images):
            count = len(generation.images)
            raise InvalidOption(option, f"{ref} has {count} image{'s' if count > 1 else ''}, not {index + 1}")
        return generation.images[index]

    async def _input(
        self, who: Requester, ref: str, option: str, load: ImageLoader | None, flagged: list[str]
    ) -> InputImage:
        """Load the image a reference names (``#12``, ``#12.2``, or what `load` reads) and check it.

        A previous image whose safety verdict is flagged has its reference added to `flagged`
        (the server's policy decides in `submit`); a file a chat gives has no verdict yet.
        """
        found = parse_image_ref(ref)
        if found is not None:
            generation = await self._source(who, found[0], "use")
            stored = self.pick(generation, found[1], option)
            if stored.nsfw:
                flagged.append(format_image_ref(generation.id, found[1]))
            return await self.of_result(generation.id, stored, option)
        if load is None:
            raise InvalidOption(option, f"must be a previous image like #12 (or #12.2), not '{shown(ref)}'")
        return await self.checked(await load(ref, option), option)

    async def _flagged_uploads(
        self, who: Requester, request: GenerationRequest, uploads: Sequence[tuple[str, InputImage]]
    ) -> list[str]:
        """Return the names of the uploads the safety check flags, where the server withholds flagged images.

        The check runs where the backend can (the local worker's checker), and only for a server
        whose policy would refuse them: elsewhere a flagged input costs nothing, and its result is
        judged on its own. (Masks are not checked: black and white shapes, not pictures.)
        """
        if not uploads:
            return []
        backend = self._runner.backend_for(request)
        if not isinstance(backend, ImageCheckingBackend) or (await self._admin.policy(who)).flagged != "withhold":
            return []
        verdicts = await backend.flags(request.model, [image.data for _, image in uploads])
        return [name for (name, _), flagged in zip(uploads, verdicts, strict=True) if flagged]

    async def _make_guide(
        self,
        source: InputImage,
        preprocess: Preprocess,
        request: GenerationRequest,
        who: Requester,
        loaded: Loaded,
        shared: Shared,
    ) -> InputImage:
        """Return the guide map of a checked image: canny here, another annotator by a backend that has it.

        A backend's map is asked for only once nothing else would refuse the request (the
        queue, the server's rules and quota, the backend's own check run on the probe `request` first),
        since the API may charge for it; its answer is checked like any image from outside.
        A map the command made already (`shared`) is taken again, at no cost.
        """
        backend = self._runner.backend_for(request)
        if preprocess != "canny" and isinstance(backend, GuideBackend) and preprocess in backend.guide_preprocessors:
            key: tuple[object, ...] = (source.sha256, preprocess, request.width, request.height, backend)
            if key not in shared.maps:
                await self._admit(who, request, loaded.flagged)
                made = await backend.make_guide(source.data, preprocess, request.width, request.height)
                if made.cost is not None:
                    loaded.costs.append(made.cost)
                shared.maps[key] = await self.checked(made.data, "guide")
        else:
            key = (source.sha256, preprocess)
            if key not in shared.maps:
                shared.maps[key] = await asyncio.to_thread(make_guide, source, preprocess, thresholds=self._canny)
        return shared.maps[key]
