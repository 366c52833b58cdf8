"""The use cases every chat calls: generate, reroll, refine, vary, upscale, cancel, delete, forget, history.

Each turns options into a checked request, records the generation before the
user is answered, and hands the job to the runner (`bot.runner`); a server's
rules and quotas are checked by its administration (`bot.admin`) first, the images a request
names are read and checked by `bot.inputs`, and a user's saved defaults are `bot.user_settings`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from bot import option_sets, options, permutations, regions, rules, user_settings
from bot.actions import (
    IMAGE_ACTIONS,
    PAN_ACTIONS,
    ButtonAction,
    format_image_ref,
    format_ref,
    parse_image_ref,
    result_actions,
)
from bot.admin import ServerAdmin
from bot.catalog import Catalog, CatalogEntry
from bot.controls import Guide
from bot.describe import Describer, Description
from bot.errors import GalleryOff, InvalidOption, NotAllowed, NotFound, shown
from bot.guides import CANNY_THRESHOLDS
from bot.history import Action, Generation, NewGeneration, Status, StoredImage
from bot.images import InputImage
from bot.inputs import ImageInputs, ImageLoader, Loaded, Parse, Shared
from bot.jobs import Job, Requester
from bot.policy import Policy
from bot.ports import (
    Backend,
    CatalogBackend,
    ChatPoster,
    GalleryLinks,
    LimitedBackend,
    PublicUpscaleBackend,
    Stores,
)
from bot.request import DEFAULT_STRENGTH, SIDE, ZOOM, GenerationRequest, Outpaint
from bot.runner import JobRunner
from bot.showcase import Showcase
from bot.user_settings import UserSettings
from bot.wildcards import WildcardFolder, Wildcards

__all__ = ["VARY_STRENGTH", "ImageService", "VaryKind", "random_seed"]

log = logging.getLogger(__name__)

VaryKind = Literal["subtle", "strong"]
# Midjourney's Vary (Subtle) and Vary (Strong), as image-to-image strengths (settings vary_subtle, vary_strong).
VARY_STRENGTH: dict[VaryKind, float] = {"subtle": 0.35, "strong": 0.7}
# How much of an upscaled image the model redraws (setting upscale_strength): A1111's usual hires-fix range.
UPSCALE_STRENGTH = 0.3
# Midjourney's Zoom Out button: the image at 2/3 of the frame.
ZOOM_OUT = 1.5


def _refuse_upscaled_alone(parent: Generation, action: str, why: str) -> None:
    """Refuse to reroll or refine an upscale that an upscaler made alone: no model step ran to redo."""
    if parent.request.upscales_alone:
        where = f"{format_ref(parent.parent_id)}, then upscale" if parent.parent_id else "its source, then upscale"
        reason = f"is not possible: {format_ref(parent.id)} was enlarged by an upscaler alone, {why} ({action} {where})"
        raise InvalidOption(action, reason)


def _once(load: ImageLoader) -> ImageLoader:
    """Return `load` remembering what it read: the prompts of one command share their attachments."""
    read: dict[tuple[str, str], bytes] = {}

    async def once(ref: str, option: str) -> bytes:
        if (ref, option) not in read:
            read[ref, option] = await load(ref, option)
        return read[ref, option]

    return once


def _repeated(parsed: options.Parsed, k: int, count: int | None = None) -> options.Parsed:
    """Return the `k`-th job of a ``--repeat``: a given seed moves on by the images before it, else none is given.

    In a variation every image keeps the seed: the variation seed moves instead (drawn per job when not given).
    `count`: the images of each job before it, when the first's (a job drawn anew may pick another count).
    """
    request = parsed.request
    field = "variation_seed" if request.variation_strength else "seed"
    seed = getattr(request, field)
    if k == 0 or seed is None:
        return parsed
    step = request.count if count is None else count
    return options.Parsed(request.model_copy(update={field: seed + k * step}), parsed.warnings, 1)


def random_seed() -> int:
    """Return a fresh seed; 32-bit so people can read it out and type it back."""
    return secrets.randbelow(2**32 - 1) + 1


class ImageService:
    """Generate, reroll, refine and list images for chat users.

    Args:
        backend: makes the images (the configured ``IMAGEBOT_BACKEND``).
        backends: other backends by name, for catalog models pinned to one (``backend = "runware"``).
        stores: generations, server rules and audit, user settings, image files.
        catalog: the names users may ask for.
        default_model: the model used when neither the request nor the user's settings name one.
        limits: what one request may ask for.
        concurrency, max_queue, max_per_user: queue limits.
        daily_quota: images one server or workspace may make per UTC day (0: no limit).
        log_prompts: log users' prompts at INFO (otherwise at DEBUG).
        retention_days: delete finished generations older than this, at start and every 6 hours (0: keep).
        max_input_bytes, max_input_pixels: the largest image a user may give, in bytes and in pixels.
        clock: the wall clock (tests pass a fixed one).
        seeds: where new seeds come from (tests pass a fixed sequence).
        wildcards: the operator's wildcard files, by name (`bot.wildcards`), that ``__name__`` draws from.
        draws: where ``{a|b}`` picks and wildcard lines are drawn from (tests pass a seeded one).
        gallery: the web gallery's links, when the operator turned it on (`adapters.gallery`).
        upscaler: the catalog upscaler that local upscales run instead of the hires fix (None: the hires fix).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        backends: Mapping[str, Backend] | None = None,
        stores: Stores,
        catalog: Catalog,
        default_model: str,
        limits: options.Limits,
        concurrency: int = 1,
        max_queue: int = 100,
        max_per_user: int = 4,
        daily_quota: int = 0,
        log_prompts: bool = False,
        retention_days: float = 0,
        max_input_bytes: int = 20 * 1024 * 1024,
        max_input_pixels: int = 4096 * 4096,
        canny_thresholds: tuple[int, int] = CANNY_THRESHOLDS,
        seeds: Callable[[], int] = random_seed,
        wildcards: Wildcards | WildcardFolder | None = None,
        draws: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        gallery: GalleryLinks | None = None,
        upscaler: str | None = None,
    ) -> None:
        self.catalog = catalog
        self._upscaler = catalog.get("upscaler", upscaler).name if upscaler else None
        self.gallery = gallery
        self.limits = limits
        self._generations = stores.generations
        self._files = stores.images
        self.user_settings = UserSettings(stores.settings, catalog, limits, catalog.get("model", default_model).name)
        self._seeds = seeds
        self._wildcards = wildcards if isinstance(wildcards, WildcardFolder) else WildcardFolder(None, wildcards or {})
        self._draws = draws or random.SystemRandom()
        self._log_prompts = log_prompts
        self._retention_days = retention_days
        self._adding = asyncio.Lock()
        self._purger: asyncio.Task[None] | None = None
        self._clock = clock
        self._posters: dict[str, ChatPoster] = {}
        self.admin = ServerAdmin(stores.policies, stores.generations, daily_quota=daily_quota, clock=clock)
        self.showcase = Showcase(stores.generations, self.admin, gallery)
        self.describer = Describer(self.admin)
        self.runner = JobRunner(
            backend=backend,
            backends=backends,
            generations=stores.generations,
            images=stores.images,
            catalog=catalog,
            concurrency=concurrency,
            max_queue=max_queue,
            max_per_user=max_per_user,
        )
        self.inputs = ImageInputs(
            generations=stores.generations,
            files=stores.images,
            runner=self.runner,
            admin=self.admin,
            source=self._source,
            admit=self._admit,
            max_bytes=max_input_bytes,
            max_pixels=max_input_pixels,
            canny_thresholds=canny_thresholds,
        )
        # What autocomplete and forms offer: the catalog less what cannot run here (`start` narrows it).
        self.offered = catalog

    @property
    def max_input_bytes(self) -> int:
        """Return the largest image file a user may give, for the chats' downloads."""
        return self.inputs.max_bytes

    @property
    def default_model(self) -> str:
        """Return the model used when nothing else names one."""
        return self.user_settings.default_model

    async def start(self) -> None:
        """Resume what a previous run left unfinished (`resumed` lists it for the chats), then run jobs."""
        # Looking at the disk for each entry's weights: off the event loop, once. A name installed
        # later is taken when typed; it is offered after a restart.
        self.offered = await asyncio.to_thread(self.catalog.only, self._runs_here)
        await self.runner.start()
        if self._retention_days:
            self._purger = asyncio.create_task(self._purge_regularly(), name="imagebot-retention")

    def _runs_here(self, entry: CatalogEntry) -> bool:
        """Tell whether a model, LoRA, embedding, VAE or ControlNet is one its backend runs (`CatalogBackend`)."""
        if entry.kind not in ("model", "lora", "embedding", "vae", "controlnet"):
            return True  # refiners, upscalers and annotators are not offered by name in a form
        try:
            backend = self.runner.backend_for_model(entry.name) if entry.kind == "model" else self.runner.backend
        except InvalidOption:  # a model pinned to a backend this bot has not configured
            return False
        return not isinstance(backend, CatalogBackend) or backend.runs(entry)

    async def _purge_regularly(self) -> None:
        while True:
            try:
                deleted = await self.purge(self._retention_days)
                if deleted:
                    log.info("retention: deleted %d generations older than %g days", deleted, self._retention_days)
            except Exception:
                log.exception("retention purge failed; trying again later")
            await asyncio.sleep(6 * 3600)

    def resumed(self, platform: str) -> list[tuple[Job, str | None]]:
        """Return the jobs of a platform that `start` resumed, with the message ref that shows each."""
        return self.runner.resumed(platform)

    async def aclose(self) -> None:
        """Stop the queue and the retention task; the backend and stores are closed by their owner."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.runner.aclose()

    # -- submitting ---------------------------------------------------------------------------------

    async def imagine(
        self,
        given: str | Mapping[str, object],
        who: Requester,
        *,
        private: bool | None = None,
        load: ImageLoader | None = None,
    ) -> Job:
        """Queue the one generation that chat options ask for; options with ``{…}`` choices are refused.

        As `imagine_each`, for a caller that follows one job.
        """
        (job,) = await self.imagine_each(given, who, private=private, load=load, most=1)
        return job

    async def imagine_each(
        self,
        given: str | Mapping[str, object],
        who: Requester,
        *,
        private: bool | None = None,
        load: ImageLoader | None = None,
        most: int = permutations.MOST,
    ) -> tuple[Job, ...]:
        """Parse chat options (text flags or typed options) and queue a generation for each prompt they make.

        ``a {red, blue} fox`` makes two (`bot.permutations`, at most `most`), with their ``{a|b}`` picks and
        ``__wildcards__`` drawn for each job (each of ``--repeat``'s too): each is parsed,
        loaded and checked against the server's rules, the backend, the queue's room and the
        day's quota before any is queued, so a refusal of one queues none. `private`
        (delivered to its author only) defaults to the user's saved setting. `load` reads an
        ``--image``/``--mask`` that is not a previous image (``#12``): the chat's attachment, or
        a file in the operator's console; without it only ``#id`` works. It is called once per
        reference, whatever the number of prompts. The user's option sets (``--mine``,
        `bot.option_sets`) stand for their flags before anything reads the prompt.
        """
        saved, sets = await self.user_settings.read(who)
        policy = await self.admin.policy(who)
        defaults = self.user_settings.defaults(saved, policy.default_model)
        if private is None:
            private = user_settings.private(saved)
        draw = permutations.Draw(await self.wildcards(), self._draws)
        try:
            # The user's option sets (--mine) first: their flags may hold {…} choices too.
            given = option_sets.expanded(given, sets)
            each = permutations.variants(given, most=most, draw=draw)
        except InvalidOption as error:
            raise options.as_typed(given, error) from None
        drawn = permutations.draws(given)
        if load is not None:
            load = _once(load)
        # Before any image is loaded or guide map made (a backend may charge for one): the number
        # of jobs and images, against the most, the queue's room and the day's quota.
        probes = [self.inputs.probe(options.image_refs(variant), self._parser(variant, defaults)) for variant in each]
        jobs_asked = sum(probe.repeat for probe in probes)
        if jobs_asked > most:
            asked = "one is taken here" if most == 1 else f"the most is {most}"
            raise options.as_typed(given, InvalidOption("repeat", f"makes {jobs_asked} jobs; {asked}"))
        if jobs_asked > 1:
            self.runner.queue.check_room(who.key, jobs_asked)
            images = sum(probe.request.count * probe.repeat for probe in probes)
            await self.admin.check_quota(who, images, policy)
        shared = Shared()
        first = [await self._prepare(variant, who, defaults, load, shared) for variant in each]
        # --repeat N: N jobs of each prompt, each its own seed; what loading it cost (a guide map) is the first's.
        # Where picks or wildcards are drawn, each job draws its own (a map made already is not paid again).
        prepared = []
        for index, (parsed, loaded) in enumerate(first):
            prepared.append((parsed, loaded))
            for k in range(1, parsed.repeat):
                if drawn:
                    again = await self._prepare(self._redrawn(given, most, index, draw), who, defaults, load, shared)
                    prepared.append((_repeated(replace(again[0], repeat=1), k, parsed.request.count), again[1]))
                else:
                    prepared.append((_repeated(parsed, k), replace(loaded, costs=[])))
        if len(prepared) > 1:  # again, as they are now: other requests may have come meanwhile
            self.runner.queue.check_room(who.key, len(prepared))
            for parsed, loaded in prepared:
                _, policy = await self._admit(who, parsed.request, loaded.flagged)
            await self.admin.check_quota(who, sum(parsed.request.count for parsed, _ in prepared), policy)
        jobs: list[Job] = []
        try:
            for parsed, loaded in prepared:
                jobs.append(
                    await self.submit(
                        parsed.request,
                        who,
                        warnings=parsed.warnings,
                        private=private,
                        saved=saved,
                        inputs=loaded.images,
                        flagged_inputs=loaded.flagged,
                        cost=sum(loaded.costs) if loaded.costs else None,
                    )
                )
        except BaseException:
            # Refused after the checks (another request took the room meanwhile): none of them is queued.
            for job in jobs:
                await self.runner.cancel(job)
            raise
        return tuple(jobs)

    @staticmethod
    def _redrawn(
        given: str | Mapping[str, object], most: int, index: int, draw: permutations.Draw
    ) -> str | dict[str, object]:
        """Return the `index`-th prompt of `given` with its picks and wildcards drawn again (another job of it)."""
        try:
            return permutations.variants(given, most=most, draw=draw, only=index)[0]
        except InvalidOption as error:
            raise options.as_typed(given, error) from None

    async def wildcards(self) -> Wildcards:
        """Return the operator's wildcards, by name, as their files are now (`bot.wildcards.WildcardFolder`)."""
        return await self._wildcards.current()

    async def model_for(self, who: Requester) -> str:
        """Return the model a request of the user's runs on when it names none: theirs, their server's, the bot's."""
        saved = await self.user_settings.get(who)
        return self.user_settings.defaults(saved, (await self.admin.policy(who)).default_model).model

    async def _prepare(
        self,
        given: str | Mapping[str, object],
        who: Requester,
        defaults: options.Defaults,
        load: ImageLoader | None,
        shared: Shared,
    ) -> tuple[options.Parsed, Loaded]:
        """Parse one prompt's options into a checked request, with the images it names loaded and checked."""
        parse = self._parser(given, defaults)
        try:
            loaded = await self.inputs.load(who, options.image_refs(given), parse, load, shared)
        except InvalidOption as error:
            raise options.as_typed(given, error) from None
        return parse(loaded.inputs, loaded.guides), loaded

    def _parser(self, given: str | Mapping[str, object], defaults: options.Defaults) -> Parse:
        """Return the parser of one prompt's options, given the images it names (`bot.inputs.Parse`)."""

        def parse(inputs: options.Inputs | None, guides: Sequence[Guide]) -> options.Parsed:
            return options.parse_options(
                given, catalog=self.catalog, defaults=defaults, limits=self.limits, inputs=inputs, guides=guides
            )

        return parse

    async def upscale(self, who: Requester, ref: int | str | None, factor: Literal[2, 4]) -> Job:
        """Queue a larger copy of a result (`ref`: an id, ``#12.2``, or None for the latest): its sides × `factor`.

        What enlarges it depends on where the parent's model runs. A backend whose upscale is an
        upscaler of the image alone (Runware's) gets no strength. Locally, the configured catalog
        upscaler (``IMAGEBOT_UPSCALER``, an ESRGAN-family network) enlarges it alone, again with no
        strength; without one, A1111's hires fix: the image resized, then image-to-image at the
        user's ``upscale_strength`` (0.3) with the same prompt and seed, so the model redraws the
        detail. What is stored is what runs. A size over the pixel budget is refused.
        """
        parent, stored = await self._result_image(who, ref, "upscale", "upscale")
        width, height = stored.width * factor, stored.height * factor
        budget = self.limits.pixel_budget
        if width > SIDE.high or height > SIDE.high or width * height > budget:
            side = min(SIDE.high, int(budget**0.5) // SIDE.low * SIDE.low)
            reason = f"{factor}× of {format_ref(parent.id)} would be {width}×{height}; the most is about {side}×{side}"
            raise InvalidOption("upscale", reason)
        changes: dict[str, object] = {
            "upscale": factor,
            "width": width,
            "height": height,
            "count": 1,
            "seed": stored.seed,
        }
        backend = self.runner.backend_for(parent.request)
        if parent.private and isinstance(backend, PublicUpscaleBackend):
            raise InvalidOption("upscale", f"of a private image is refused here: {backend.public_upscale}")
        alone = backend.upscales_alone
        if alone or self._upscaler is not None:
            # No model redraws it: no strength, and no refiner to hand over to.
            changes |= {"upscaler": None if alone else self._upscaler, "refiner": None}
            return await self._from_result(who, parent, stored, "upscale", None, changes)
        return await self._from_result(who, parent, stored, "upscale", UPSCALE_STRENGTH, changes, "upscale_strength")

    async def describe(
        self, who: Requester, ref: int | str | None, load: ImageLoader | None = None
    ) -> tuple[str, Description]:
        """Put an image into words as a prompt (``/describe``): what the reply names it by, and the description.

        `ref` is a result (an id, ``#12.2``, None: the user's latest) or, with `load`, a chat's file.
        The backend is the one the user's model runs on (`bot.describe.Describer`).
        """
        model = await self.model_for(who)
        backend = await self.describer.backend(who, self.runner.backend_for_model(model))
        async with self.describer.turn(who):
            if isinstance(ref, str) and parse_image_ref(ref) is None:
                if load is None:
                    raise InvalidOption("describe", f"takes a previous image like #12 (or #12.2), not '{shown(ref)}'")
                image = await self.inputs.checked(await load(ref, "image"), "image")
                name, flagged = "the uploaded image", None
            else:
                parent, stored = await self._result_image(who, ref, "describe", "image")
                image = await self.inputs.checked(await self._files.read(stored.path), "image")
                name, flagged = format_image_ref(parent.id, stored.index), stored.nsfw
            said = await self.describer.describe(who, backend, model, image, flagged=flagged, name=name)
        return name, said

    async def vary(self, who: Requester, ref: int | str | None, kind: VaryKind, prompt: str | None = None) -> Job:
        """Queue image-to-image of a result (`ref` as for `zoom`) with its settings, a new seed and the kind's strength.

        The strength is the user's ``vary_subtle``/``vary_strong`` setting, else 0.35 / 0.7. `prompt`
        re-words it (a remix, `bot.options.reworded`), as for `zoom` and `pan`.
        """
        parent, stored = await self._result_image(who, ref, "vary", "vary")
        width, height = options.size_for_image(stored.width, stored.height, self.limits.pixel_budget)
        changes = {"width": width, "height": height, "seed": self._seeds(), **_words(prompt)}
        return await self._from_result(who, parent, stored, "vary", VARY_STRENGTH[kind], changes, f"vary_{kind}")

    async def zoom(
        self, who: Requester, ref: int | str | None, factor: float = ZOOM_OUT, prompt: str | None = None
    ) -> Job:
        """Queue a zoom out of a result (`ref`: an id, ``#12.2``, or None for the latest), Midjourney's Zoom Out.

        The output keeps the result's size; the image shrinks to about 1/`factor` of it in the
        middle and the border is painted anew (`bot.options.zoom_out`), with its prompt and
        settings, a new seed and the typed ``--zoom``'s strength, one image.
        """
        if not ZOOM.low < factor <= ZOOM.high:
            raise InvalidOption("zoom", f"must be more than {ZOOM.low:g} and at most {ZOOM.high:g}, not {factor:g}")
        parent, stored = await self._result_image(who, ref, "zoom out of", "zoom")
        width, height = options.size_for_image(stored.width, stored.height, self.limits.pixel_budget)
        border = options.zoom_out(width, height, factor)
        if border is None:
            reason = f"needs a larger image: {format_ref(parent.id)} is {width}×{height}, too small for a border"
            raise InvalidOption("zoom", reason)
        changes = {
            "width": width,
            "height": height,
            "outpaint": border.model_dump(),
            "count": 1,
            "seed": self._seeds(),
            **_words(prompt),
        }
        return await self._from_result(who, parent, stored, "zoom", DEFAULT_STRENGTH, changes)

    async def pan(
        self, who: Requester, ref: int | str | None, direction: options.PanDirection, prompt: str | None = None
    ) -> Job:
        """Queue a pan of a result (`ref` as for `zoom`) toward `direction`, Midjourney's Pan.

        The canvas grows that way by half the image's side along it (`bot.options.pan`); the image
        keeps its pixels and the strip is painted to continue it, with its prompt and settings, a
        new seed and the typed ``--outpaint``'s strength, one image.
        """
        parent, stored = await self._result_image(who, ref, f"pan {direction}", "pan")
        width, height, strip = self._strips(stored.width, stored.height, direction)
        if strip is None:
            reason = (
                f"{direction} has no room: {format_ref(parent.id)} is {width}×{height}, and an image is at most"
                f" {SIDE.high} on a side and {self.limits.pixel_budget / 1e6:.1f} megapixels"
            )
            raise InvalidOption("pan", reason)
        changes = self._grown(width, height, strip, prompt)
        return await self._from_result(who, parent, stored, "pan", DEFAULT_STRENGTH, changes)

    async def square(self, who: Requester, ref: int | str | None, prompt: str | None = None) -> Job:
        """Queue a Make Square of a result (`ref` as for `zoom`), Midjourney's: the short side grown to the long one.

        The image keeps its pixels and the strips on both ends are painted to continue it (an
        outpaint, `bot.options.make_square`), with its prompt and settings, a new seed and the typed
        ``--outpaint``'s strength, one image.
        """
        parent, stored = await self._result_image(who, ref, "make square", "square")
        width, height, strips = self._strips(stored.width, stored.height, "square")
        if strips is None:
            why = "it is square already" if width == height else "a square of its long side passes the pixel budget"
            raise InvalidOption("square", f"has no room: {format_ref(parent.id)} is {width}×{height}, and {why}")
        changes = self._grown(width, height, strips, prompt)
        return await self._from_result(who, parent, stored, "square", DEFAULT_STRENGTH, changes)

    async def vary_region(
        self,
        who: Requester,
        ref: int | str | None,
        selection: str,
        prompt: str | None = None,
        strength: float | None = None,
    ) -> Job:
        """Queue a Vary (Region) of a result (`ref` as for `zoom`), Midjourney's: the parts selected made again.

        `selection` is the gallery editor's text (`bot.regions`); its mask (the parts, grown a
        little) is repainted with the result's prompt (re-worded by `prompt`) and settings, a new
        seed, at `strength` (the page's), else the user's ``vary_region`` setting, else `REGION_STRENGTH`;
        the local worker keeps every pixel outside it as it was.
        """
        if strength is not None and not 0 < strength <= 1:
            raise InvalidOption("Strength", f"must be over 0 and at most 1, not {strength:g}")
        parent, stored = await self._result_image(who, ref, "vary a region of", "region")
        parts = regions.parse_parts(selection, stored.width, stored.height)
        drawn = await asyncio.to_thread(regions.region_mask, parts, stored.width, stored.height)
        mask = await self.inputs.checked(drawn, "mask")
        width, height = options.size_for_image(stored.width, stored.height, self.limits.pixel_budget)
        changes = {"width": width, "height": height, "seed": self._seeds(), "mask_image": mask.sha256, **_words(prompt)}
        setting = None if strength is not None else "vary_region"
        chosen = regions.REGION_STRENGTH if strength is None else strength
        return await self._from_result(who, parent, stored, "vary", chosen, changes, setting, also=[mask])

    async def region_link(self, who: Requester, ref: int | str | None) -> tuple[str, str]:
        """Return an image of the user's (`ref` as for `zoom`) as ``#12.2``, and a new link to its Vary (Region) page.

        The page, in the user's gallery, selects the parts of it to vary. Refused as the Vary (Region) itself
        would be (another's image, no such image), and where this backend cannot inpaint.
        """
        if self.gallery is None:
            raise GalleryOff()
        parent, stored = await self._result_image(who, ref, "vary a region of", "region")
        image = format_image_ref(parent.id, stored.index)
        if "region" not in self.result_actions(parent.request):
            raise InvalidOption("Vary (Region)", f"cannot run on {image} here: this backend does not inpaint")
        return image, await self.gallery.region_link(who.platform, who.user_id, parent.id, stored.index)

    def _grown(self, width: int, height: int, strips: Outpaint, prompt: str | None) -> dict[str, object]:
        """Return the changes of an outpaint growing a `width` × `height` result by `strips`: one image, a new seed."""
        return {
            "width": width + strips.left + strips.right,
            "height": height + strips.top + strips.bottom,
            "outpaint": strips.model_dump(),
            "count": 1,
            "seed": self._seeds(),
            **_words(prompt),
        }

    async def imagine_texts(
        self, platform: str, user_id: str, generations: Sequence[Generation]
    ) -> dict[int, str | None]:
        """Return the ``/imagine`` text that makes each of a user's generations again, or None where none does.

        Input images are named as the user's earlier images that hold them (``#12.2``); one
        uploaded, which no earlier image holds, leaves none (`bot.options.imagine_command`).
        """
        shas = {sha for generation in generations for sha in options.input_images(generation.request)}
        found = await self._generations.find_images(platform, user_id, shas)
        refs = {sha: format_image_ref(generation_id, index) for sha, (generation_id, index) in found.items()}
        return {g.id: options.imagine_command(g.request, self.catalog, refs) for g in generations}

    async def made_from(self, generation: Generation) -> tuple[int, int] | None:
        """Return the image of its author's (generation id, index) a Vary or Upscale started from, framed as it is.

        None for anything else (a zoom, pan or square frames it anew), or when that image is gone.
        """
        request = generation.request
        if request.init_image is None or request.outpaint is not None or generation.action not in ("vary", "upscale"):
            return None
        found = await self._generations.find_images(generation.platform, generation.user_id, [request.init_image])
        return found.get(request.init_image)

    async def imagine_text(self, who: Requester, generation_id: int | None) -> tuple[int, str]:
        """Return the id of a generation the user may see (None: their latest) and the text that makes it again.

        Edit's: the ``/imagine`` text without the command.
        """
        generation = await self.details(who, generation_id, "edit")
        texts = await self.imagine_texts(generation.platform, generation.user_id, [generation])
        text = texts[generation.id]
        if text is None:
            why = "an upscale, or made from an uploaded image"
            raise InvalidOption("edit", f"{format_ref(generation.id)} cannot be written as one /imagine ({why})")
        return generation.id, text.removeprefix("/imagine ")

    async def image_actions(
        self, who: Requester, generation_id: int, index: int
    ) -> tuple[StoredImage, tuple[ButtonAction, ...]]:
        """Return image `index` of a result of the user's and the buttons that act on it alone ("Image 2")."""
        parent = await self._source(who, generation_id, "vary, upscale, zoom or pan")
        stored = self.inputs.pick(parent, index, "image")
        actions = self.result_actions(parent.request)
        return stored, tuple(action for action in actions if action in IMAGE_ACTIONS and action != "pick")

    def _strips(
        self, width: int, height: int, toward: options.PanDirection | Literal["square"]
    ) -> tuple[int, int, Outpaint | None]:
        """Return the size a pan (or Make Square) of a `width` × `height` result starts from, and its strips.

        None: no room that way (the longest side, the pixel budget).
        """
        budget = self.limits.pixel_budget
        width, height = options.size_for_image(width, height, budget)
        if toward == "square":
            return width, height, options.make_square(width, height, budget)
        return width, height, options.pan(width, height, toward, budget)

    async def _result_image(
        self, who: Requester, ref: int | str | None, action: str, option: str
    ) -> tuple[Generation, StoredImage]:
        """Return the result `ref` names (an id, ``#12.2``, None: the user's latest) and that image of it."""
        found = parse_image_ref(ref) if isinstance(ref, str) else None if ref is None else (ref, 0)
        parent = await self._source(who, found[0] if found else None, action)
        return parent, self.inputs.pick(parent, found[1] if found else 0, option)

    async def _from_result(
        self,
        who: Requester,
        parent: Generation,
        stored: StoredImage,
        action: Literal["vary", "upscale", "zoom", "pan", "square"],
        strength: float | None,
        changes: Mapping[str, object],
        setting: str | None = None,
        also: Sequence[InputImage] = (),
    ) -> Job:
        """Queue image-to-image of one of a result's images with its own prompt and settings, and `changes`.

        The strength is the user's `setting` (``vary_subtle``, ``upscale_strength``…), else `strength`;
        `also`: the other images `changes` name (Vary (Region)'s mask), stored with it.
        None: no model redraws the image (an upscaler enlarges it alone), and no setting applies.
        The result is the structure now: the parent's mask, outpaint, upscale or ControlNets are not done again;
        its style references are (the look is the user's choice, as Midjourney's Vary keeps ``--sref``), on
        every step that runs now. A zoom, pan or square is stored as a generation from its parent (the
        rows' actions predate them).
        """
        chosen: object = strength
        if strength is not None and setting is not None:
            chosen = (await self.user_settings.get(who)).get(setting, strength)
            assert isinstance(chosen, int | float)  # settings are checked when saved
        image = await self.inputs.of_result(parent.id, stored, action)
        image_to_image = {"init_image": image.sha256, "strength": chosen, "mask_image": None}
        again = {
            "outpaint": None,
            "inpainter": None,  # chosen again for this request (`submit`)
            "upscale": None,
            "upscaler": None,
            "controlnets": (),
            "variation_seed": None,  # the image is the start now: its noise variation is in its pixels
            "variation_strength": 0.0,
        }
        try:
            request = GenerationRequest.from_dict({**parent.request.to_dict(), **again, **image_to_image, **changes})
            styles = [control for control in parent.request.controlnets if control.style]
            if styles and not request.upscales_alone:
                restepped = [c.model_copy(update={"end_step": request.run_steps}).model_dump() for c in styles]
                request = GenerationRequest.from_dict({**request.to_dict(), "controlnets": restepped})
        except ValueError as error:
            reason = f"cannot run on {format_ref(parent.id)} ({shown(str(error), 120)})"
            raise InvalidOption(action, reason) from None
        request, dropped = self._without_refused_refiner(request, chosen)
        warnings = rules.check(request, self.catalog, self.limits) + dropped
        if request.upscales_alone:
            warnings = ()  # about the model's steps and prompts, none of which play a part
        return await self.submit(
            request,
            who,
            warnings=warnings,
            action=action if action == "vary" or action == "upscale" else "generate",
            parent=parent,
            private=parent.private,
            inputs=[image, *also],
            flagged_inputs=[format_image_ref(parent.id, stored.index)] if stored.nsfw else [],
        )

    def _without_refused_refiner(
        self, request: GenerationRequest, strength: object
    ) -> tuple[GenerationRequest, tuple[str, ...]]:
        """Return a request from a result without the parent's refiner where it cannot run, and the note why.

        The user asked for the image, not the refiner: where the few steps that run at a low
        strength leave a stage none, or the backend takes no refiner after an input image
        (Runware), it runs on the base model alone.
        """
        if request.refiner is None or request.upscales_alone:
            return request, ()
        if min(request.split) < 1:
            steps = "1 step leaves" if request.run_steps == 1 else f"{request.run_steps} steps leave"
            why = f"{steps} it none at strength {strength}"
        else:
            try:
                self.runner.backend_for(request).check(request)
                return request, ()
            except InvalidOption as error:
                if error.option != "refiner":
                    return request, ()  # refused in `submit`, with its own sentence
                why = f"it {error.reason}"
        return request.model_copy(update={"refiner": None}), (f"The refiner is left out: {why}.",)

    async def submit(
        self,
        request: GenerationRequest,
        who: Requester,
        *,
        warnings: tuple[str, ...] = (),
        action: Action = "generate",
        parent: Generation | None = None,
        private: bool = False,
        saved: Mapping[str, object] | None = None,
        inputs: Sequence[InputImage] = (),
        flagged_inputs: Sequence[str] = (),
        cost: float | None = None,
    ) -> Job:
        """Record a checked request as a queued generation and queue its job.

        `saved` is the user's settings when the caller has read them already; `inputs` are the
        checked images the request names, stored once every check has passed; `flagged_inputs`
        names those whose stored safety verdict is flagged, for the server's policy; `cost` is
        what was paid for it already (guide maps), to which the job's cost is added.

        A new request that inpaints gets its model's inpainter here (`_with_inpainter`); a reroll or
        refine keeps its parent's choice, so it makes what the parent's settings made.
        """
        if action not in ("reroll", "refine"):
            request = self._with_inpainter(request)
        backend, policy = await self._admit(who, request, flagged_inputs)
        if request.seed is None:
            request = request.with_seed(self._seeds())
        if request.variation_strength and request.variation_seed is None:
            request = request.model_copy(update={"variation_seed": self._seeds()})
        # Held from counting the quota to adding the row: requests sent together would each pass a
        # count made before any of the others was added. And from storing the inputs to adding the
        # row that names them, so that a purge cannot find them unreferenced in between and delete them.
        async with self._adding:
            await self.admin.check_quota(who, request.count, policy)
            for image in inputs:
                await self._files.save_input(image.data)
            generation = await self._generations.add(
                NewGeneration(
                    platform=who.platform,
                    user_id=who.user_id,
                    workspace=who.workspace,
                    channel=who.channel,
                    request=request,
                    action=action,
                    backend=backend.name,
                    parent_id=parent.id if parent else None,
                    warnings=warnings,
                    private=private,
                    cost=cost,
                )
            )
        if saved is None:
            saved = await self.user_settings.get(who)
        job = Job(generation.id, who, request, warnings, private, batchable=user_settings.batching(saved))
        position = await self.runner.submit(job)
        await self.admin.audit(who, action, job.id)
        context = {"job_id": job.id, "user_id": who.user_id, "platform": who.platform}
        log.info("queued %s (%s, %s) at position %s", format_ref(job.id), action, backend.name, position, extra=context)
        # Prompts are the users' words: at INFO only when the operator asks for them.
        log.log(
            logging.INFO if self._log_prompts else logging.DEBUG,
            "prompt of %s: %s",
            format_ref(job.id),
            request.prompt,
            extra=context,
        )
        return job

    def _with_inpainter(self, request: GenerationRequest) -> GenerationRequest:
        """Return `request` with its model's inpainter repainting its mask or outpaint, where one can; else none.

        SDXL's inpainting UNet sees the mask and the kept pixels besides the noise, so what it paints
        continues what is kept (the model alone sees only noised pixels, and seams show at a high
        strength). LoRAs and IP-Adapters are weights for the model's own UNet: with them the model
        repaints. So does it on a backend that has no id for the inpainter (`Backend.check`).
        """
        entry = self.catalog.find("model", request.model)
        chosen = entry.inpainter if entry is not None else None
        adapters = any(self.catalog.is_ip_adapter(control.model) for control in request.controlnets)
        if (request.mask_image is None and request.outpaint is None) or request.loras or adapters:
            chosen = None
        if chosen == request.inpainter:
            return request
        if chosen is not None:
            with_it = request.model_copy(update={"inpainter": chosen})
            try:
                self.runner.backend_for(with_it).check(with_it)
                return with_it
            except InvalidOption:
                pass  # no id for it there, or refused for a reason `_admit` says again without it
        return request.model_copy(update={"inpainter": None})

    async def _admit(
        self, who: Requester, request: GenerationRequest, flagged_inputs: Sequence[str]
    ) -> tuple[Backend, Policy]:
        """Run every check a request passes before it may cost anything; return its backend and the server's rules.

        Room in the queue, the server's rules and the backend's own check, then the server's quota
        (counted again as the request is added, `submit`).
        """
        self.runner.queue.check_room(who.key)
        policy = await self.admin.check(who, request, flagged_inputs)
        backend = self.runner.backend_for(request)
        backend.check(request)
        await self.admin.check_quota(who, request.count, policy)
        return backend, policy

    async def reroll(self, who: Requester, generation_id: int | None) -> Job:
        """Queue the same settings with a new seed (a variation: new variation seeds); None: the user's latest.

        Only the author may reroll, unless the server's policy opens rerolls to everyone:
        then the new image belongs to whoever asked.
        """
        parent = await self._source(who, generation_id, "reroll", opened_by="open_reroll")
        _refuse_upscaled_alone(parent, "reroll", "which a new seed does not change")
        # A variation's images are variants of its seed's: another draw of them is new variation seeds.
        field = "variation_seed" if parent.request.variation_strength else "seed"
        request = parent.request.model_copy(update={field: self._seeds()})
        warnings = rules.check(request, self.catalog, self.limits)
        return await self.submit(
            request, who, warnings=warnings, action="reroll", parent=parent, private=parent.private
        )

    async def refine(
        self,
        who: Requester,
        generation_id: int | None,
        percent: int | None = None,
    ) -> Job:
        """Queue the same seed and settings with the refiner taking over at `percent`."""
        parent = await self._source(who, generation_id, "refine")
        _refuse_upscaled_alone(parent, "refine", "with no model steps to refine")
        refiner = self._refiner_of(parent.request)
        if refiner is None:
            raise InvalidOption("refine", f"is not possible: model '{parent.request.model}' has no refiner")
        request = parent.request.refined(refiner, percent or rules.DEFAULT_REFINE_PERCENT)
        warnings = rules.check(request, self.catalog, self.limits)
        return await self.submit(
            request, who, warnings=warnings, action="refine", parent=parent, private=parent.private
        )

    def _refiner_of(self, request: GenerationRequest) -> str | None:
        """Return the refiner a refine of `request` uses: its own, else its model's catalog refiner, or None."""
        return request.refiner.model if request.refiner else self.catalog.get("model", request.model).refiner

    async def cancel(self, who: Requester, generation_id: int | None = None) -> int:
        """Cancel a queued or running job of the user's (None: their newest) and return its id."""
        if generation_id is None:
            mine = self.runner.unfinished(who)
            if not mine:
                raise NotFound("queued or running generation of yours")
            generation_id = mine[-1].id
        job = self.runner.job(generation_id)
        if job is None or job.finished:
            raise NotFound(f"queued or running generation {format_ref(generation_id)}")
        if job.requester.key != who.key:
            raise NotAllowed("cancel")
        await self.runner.cancel(job)
        return generation_id

    async def delete(self, who: Requester, generation_id: int) -> None:
        """Delete a finished generation of the user's, with its image files."""
        generation = await self.details(who, generation_id)
        if (generation.platform, generation.user_id) != who.key:
            raise NotAllowed("delete")
        if self.runner.job(generation_id) is not None:
            raise InvalidOption("delete", f"must wait: {format_ref(generation_id)} is still being made (cancel it)")
        await self._delete_generations([generation_id])
        await self.admin.audit(who, "delete", generation_id)

    async def forget(self, who: Requester) -> int:
        """Delete everything of a user's: queued jobs (cancelled), images, their files, history and settings.

        Returns:
            How many generations were deleted.
        """
        for job in self.runner.unfinished(who):
            await self.cancel(who, job.id)
        deleted = await self._delete_finished(platform=who.platform, user_id=who.user_id)
        await self.user_settings.clear(who)
        if self.gallery is not None:
            # Its links die with the history they showed, and its thumbnails with the images.
            await self.gallery.forget(who.platform, who.user_id)
        await self.admin.audit(who, "forget", detail=f"{deleted} generations")
        log.info("forgot %d generations of %s:%s", deleted, who.platform, who.user_id)
        return deleted

    async def purge(self, days: float) -> int:
        """Delete every finished generation older than `days`, with its files; return how many."""
        return await self._delete_finished(before=self._clock() - days * 86400)

    async def _delete_finished(self, **which: object) -> int:
        deleted = 0
        while ids := await self._generations.finished_ids(**which):  # type: ignore[arg-type]
            await self._delete_generations(ids)
            deleted += len(ids)
        return deleted

    async def _delete_generations(self, ids: Sequence[int]) -> None:
        """Delete generations with their image files, and the input images no other generation uses."""
        inputs = await self._generations.inputs_of(ids)
        for generation_id in ids:
            for image in await self._generations.delete(generation_id):
                await self._files.delete(image.path)
        if self.gallery is not None:
            await self.gallery.forget_images(ids)
        async with self._adding:
            for sha in await self._generations.unreferenced_inputs(inputs):
                await self._files.delete_input(sha)

    async def attach_message(self, generation_id: int, ref: str) -> None:
        """Remember the chat message that shows a generation, so reactions on it find it."""
        await self._generations.set_message_ref(generation_id, ref)

    async def by_message(self, platform: str, ref: str) -> Generation | None:
        """Return the generation a chat message shows, or None."""
        return await self._generations.by_message_ref(platform, ref)

    async def star(self, who: Requester, generation_id: int | None, *, starred: bool = True) -> str:
        """Star one of the user's finished images (default: their latest) for the showcase, or unstar it.

        Returns:
            What that means for the showcase, as one sentence (`bot.showcase.Showcase.star`).
        """
        action = "star" if starred else "unstar"
        generation = await self._source(who, generation_id, action, latest_status="done" if starred else None)
        return await self.showcase.star(who, generation, starred=starred)

    async def gallery_link(self, who: Requester) -> str:
        """Return a new personal link to the user's web gallery."""
        if self.gallery is None:
            raise GalleryOff()
        return await self.gallery.link(who.platform, who.user_id)

    async def revoke_gallery(self, who: Requester) -> None:
        """Make every gallery link the user was given stop working."""
        if self.gallery is None:
            raise GalleryOff()
        await self.gallery.revoke(who.platform, who.user_id)

    # -- the chats running here ---------------------------------------------------------------------

    def add_poster(self, platform: str, poster: ChatPoster) -> None:
        """Let a platform's running chat post the jobs started outside it (gallery clicks) until it is removed."""
        self._posters[platform] = poster

    def remove_poster(self, platform: str, poster: ChatPoster) -> None:
        """Stop posting to a chat that is stopping (another one added since stays)."""
        if self._posters.get(platform) is poster:
            del self._posters[platform]

    def poster(self, platform: str) -> ChatPoster | None:
        """Return the running chat of a platform that posts jobs started outside it, or None."""
        return self._posters.get(platform)

    # -- reading ------------------------------------------------------------------------------------

    def queue(self, who: Requester) -> tuple[int, list[Job]]:
        """Return how many jobs wait in all, and the user's unfinished jobs, oldest first."""
        return self.runner.queue.waiting, self.runner.unfinished(who)

    async def read_image(self, relative: str) -> bytes:
        """Return the bytes of a stored image file."""
        return await self._files.read(relative)

    def job(self, generation_id: int) -> Job | None:
        """Return the live job of a generation that is queued or running."""
        return self.runner.job(generation_id)

    def result_actions(self, request: GenerationRequest) -> tuple[ButtonAction, ...]:
        """Return the buttons under a finished generation of `request`, none that could only be refused.

        `bot.actions.result_actions` (by the image's size and ControlNets), less a pan with no room
        left that way (the longest side, the pixel budget), Make Square with no room, Reroll and Refine of an upscale an
        upscaler made alone, Refine where the model has no refiner, Vary (Region) where no gallery is served, Edit
        of an inpaint (no earlier image holds its mask), and what the backend cannot do
        (`LimitedBackend`). Old messages keep their buttons, which answer with the refusal's sentence.
        """
        withheld: set[ButtonAction] = {
            action
            for action, direction in PAN_ACTIONS.items()
            if self._strips(request.width, request.height, direction)[2] is None
        }
        if self._strips(request.width, request.height, "square")[2] is None:
            withheld.add("square")
        if request.upscales_alone:
            withheld |= {"reroll", "refine"}
        if self.gallery is None:
            withheld.add("region")  # its selection is made on the gallery's page
        # Edit where a /imagine text says the request, its input images as the earlier images they came from. A mask
        # is drawn for its image (Vary (Region)'s, or a file given with it), so no earlier image holds it.
        earlier = dict.fromkeys(options.input_images(request), "#1")
        if request.mask_image is not None or options.imagine_command(request, self.catalog, earlier) is None:
            withheld.add("edit")
        backend: Backend | None = None
        try:
            if self._refiner_of(request) is None:
                withheld.add("refine")
            backend = self.runner.backend_for(request)
        except InvalidOption:
            pass  # a model since taken out of the catalog: its buttons say so themselves
        if isinstance(backend, LimitedBackend):
            withheld |= backend.withheld_actions(request)
        return tuple(action for action in result_actions(request) if action not in withheld)

    async def history(self, who: Requester, limit: int = 10) -> list[Generation]:
        """Return the user's recent generations, newest first."""
        return await self._generations.recent(who.platform, who.user_id, limit=limit)

    async def details(self, who: Requester, generation_id: int | None, action: str = "show") -> Generation:
        """Return a generation the user may see (their own, or anyone's that is not private).

        None means the user's latest; `action` names what it is for in the sentence when they have none.
        """
        if generation_id is None:
            return await self._source(who, None, action)
        generation = await self._generations.get(generation_id)
        if generation is None or (generation.private and (generation.platform, generation.user_id) != who.key):
            raise NotFound(f"generation {format_ref(generation_id)}")
        return generation

    async def guides(self, who: Requester, generation_id: int | None) -> tuple[Generation, list[bytes]]:
        """Return a generation the user may see and the guide images its ControlNets saw, in order.

        The guides as the ControlNets got them (preprocessed), so that users see why the structure
        came out as it did; None means the user's latest generation.
        """
        generation = await self.details(who, generation_id, "show the guide of")
        controls = generation.request.controlnets
        if not controls:
            raise NotFound(f"guide image of {format_ref(generation.id)}: it was made without a ControlNet")
        try:
            return generation, [await self._files.read_input(control.guide) for control in controls]
        except FileNotFoundError:
            raise NotFound(f"guide image of {format_ref(generation.id)} any more (it was deleted)") from None

    async def flagged_images(self, who: Requester, generation_id: int) -> list[StoredImage]:
        """Return the flagged images of a generation for its author only (a "Show" button)."""
        generation = await self.details(who, generation_id)
        if (generation.platform, generation.user_id) != who.key:
            raise NotAllowed("show", what="its flagged images")
        return [image for image in generation.images if image.nsfw]

    async def _source(
        self,
        who: Requester,
        generation_id: int | None,
        action: str,
        *,
        opened_by: str | None = None,
        latest_status: Status | None = None,
    ) -> Generation:
        """Return the generation to act on: the user's own, or another's where the policy key `opened_by` allows.

        Without an id, the user's latest (with `latest_status`, if given).
        """
        if generation_id is None:
            latest = await self._generations.latest(who.platform, who.user_id, status=latest_status)
            if latest is None:
                raise NotFound(f"earlier image of yours to {action}; make one with /imagine first")
            return latest
        generation = await self.details(who, generation_id)
        if (generation.platform, generation.user_id) != who.key and not (
            opened_by is not None and getattr(await self.admin.policy(who), opened_by)
        ):
            raise NotAllowed(action)
        return generation


def _words(prompt: str | None) -> dict[str, object]:
    """Return a request change re-wording a result (a remix's checked words), or none."""
    return {} if prompt is None else {"prompt": options.reworded(prompt)}
