"""Plain-text lines every chat shows the same way: progress, a result's settings, saved defaults.

Discord and Slack both render ``**``-free text with emoji and backticks, so
these lines are shared; each adapter adds its own markup around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from bot.actions import format_ref
from bot.catalog import Catalog
from bot.history import AuditEntry, Generation
from bot.jobs import Job, JobEvent, progress_bar
from bot.pngmeta import parameters_text
from bot.request import ControlNetSpec, GenerationRequest
from bot.weighting import is_plain

__all__ = [
    "FORGET_WARNING",
    "audit_text",
    "control_line",
    "defaults_line",
    "deleted_line",
    "details_text",
    "forgotten_line",
    "history_line",
    "mention",
    "parse_setting_pairs",
    "progress_line",
    "read_as_written",
    "refiner_part",
    "region_line",
    "result_fields",
    "steps_text",
    "withheld_line",
]


def progress_line(job: Job, event: JobEvent) -> str:
    """Return the line that stands for the image while it is queued or being made."""
    head = f"{format_ref(job.id)} · seed {job.request.seed}"
    if event.kind == "queued":
        position = job.position if job.position is not None else event.position
        where = "next in the queue" if position in (None, 0, 1) else f"position {position} in the queue"
        eta = job.eta
        if eta is not None and position not in (None, 0):
            where += f" · about {_duration(eta)}"
        return f"⏳ {head} · {where}"
    if event.kind == "progress" and event.progress is not None:
        step, total, stage = event.progress.step, event.progress.total, event.progress.stage
        return f"🎨 {head} · {stage} `{progress_bar(step, total)}` {step}/{total}"
    return f"🎨 {head} · starting"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def steps_text(request: GenerationRequest) -> str:
    """Return the steps as the user set them and, from an image, how many of them run: "40 at strength 0.5 → 20 run"."""
    if request.upscales_alone:
        return "none: an upscaler enlarged the image alone"
    if request.strength is None:
        return str(request.steps)
    return f"{request.steps} at strength {request.strength:g} → {request.run_steps} run"


def result_fields(generation: Generation, catalog: Catalog | None = None) -> list[tuple[str, str]]:
    """Return (name, value) pairs describing a finished generation: seed, steps and split, model and more.

    With the `catalog`, an IP-Adapter among the ControlNets is named as one (`control_line`).
    """
    request = generation.request
    base, refined = request.split
    if request.upscales_alone:
        by = f"the {request.upscaler} upscaler" if request.upscaler else "the backend's upscaler"
        fields = [
            ("Seed", str(generation.seed)),
            ("Steps", steps_text(request)),
            ("Upscale", f"{request.upscale}× by {by}, no redraw"),
            ("Model", request.model),
            ("Size", f"{request.width}×{request.height}"),
        ]
        if generation.seconds is not None:
            fields.append(("Time", f"{generation.seconds:.1f} s"))
        return fields
    fields = [
        ("Seed", str(generation.seed)),
        ("Steps", steps_text(request) + (f" ({base} base + {refined} refiner)" if request.refiner else "")),
        (
            "Refiner",
            f"{request.refiner.model} from {round(100 * base / request.run_steps)} %" if request.refiner else "off",
        ),
        ("Model", request.model + (f" (inpainted by {request.inpainter})" if request.inpainter else "")),
        ("Size", f"{request.width}×{request.height}"),
        ("Sampler", f"{request.scheduler} · CFG {request.cfg_scale:g}"),
    ]
    if request.upscale:
        fields.append(
            ("Upscale", f"{request.upscale}× hires fix: Lanczos, then redrawn at strength {request.strength:g}")
        )
    for control in request.controlnets:
        adapter = catalog is not None and catalog.is_ip_adapter(control.model)
        label = "Style reference" if control.style else "IP-Adapter" if adapter else "ControlNet"
        fields.append((label, control_line(control, request.run_steps, catalog)))
    if request.loras:
        fields.append(("LoRAs", ", ".join(f"{lora.name}:{lora.weight:g}" for lora in request.loras)))
    variations = request.variation_seeds()
    if variations:
        seeds = str(variations[0]) if len(variations) == 1 else f"{variations[0]}…{variations[-1]}"
        fields.append(("Variation", f"{request.variation_strength:g} toward seed {seeds}"))
    elif request.count > 1:
        fields.append(("Images", f"{request.count} (seeds {generation.seed}…{generation.seed + request.count - 1})"))
    if request.tiling:
        fields.append(("Tiling", "seamless: it repeats edge to edge"))
    if generation.seconds is not None:
        fields.append(("Time", f"{generation.seconds:.1f} s"))
    return fields


def mention(user_id: str) -> str:
    """Return how Discord and Slack mention a user in a message (each shows the name)."""
    return f"<@{user_id}>"


def details_text(
    generation: Generation,
    *,
    limit: int,
    quote: Callable[[str], str] = str,
    mention: Callable[[str], str] = mention,
) -> str:
    """Return everything needed to reproduce a generation: who and what, then its parameters as a code block.

    Args:
        generation: the generation.
        limit: the most characters of parameters shown.
        quote: escapes the user's text for the chat's markup (Slack's ``&<>``).
        mention: names the author in the chat's markup.
    """
    who = mention(generation.user_id)
    lines = [f"{format_ref(generation.id)} · {generation.action} · {generation.status} · {who}"]
    if generation.parent_id:
        lines.append(f"from {format_ref(generation.parent_id)}")
    if generation.error:
        lines.append(f"error: {quote(generation.error)}")
    if (note := read_as_written(generation.request)) is not None:
        lines.append(note)
    text = quote(parameters_text(generation.request, generation.seed))
    return "\n".join(lines) + f"\n```\n{text[:limit]}\n```"


# Characters past which a prompt may pass CLIP's 77 tokens (about four characters a token).
_LONG_PROMPT = 300


def read_as_written(request: GenerationRequest) -> str | None:
    """Return the note that a generation made before weights were read reads its prompt as then, where it matters.

    Such a request (migration 14) is made again as it was made: brackets read as words, the
    prompt cut at CLIP's 77 tokens. Said where the prompt has brackets or may be that long.
    """
    if request.prompt_weighting:
        return None
    texts = [request.prompt, request.negative_prompt or ""]
    if all(is_plain(text) and len(text) <= _LONG_PROMPT for text in texts):
        return None
    return "made before prompt weights: its brackets are read as words and its prompt ends at CLIP's 77 tokens"


def audit_text(entries: Sequence[AuditEntry], when: Callable[[float], str], quote: Callable[[str], str] = str) -> str:
    """Return a community's recent audit entries, newest first, one line each.

    Args:
        entries: newest first.
        when: renders a timestamp in the chat's markup (each chat shows it in the reader's zone).
        quote: escapes text for the chat's markup.
    """
    if not entries:
        return "Nothing recorded yet."
    lines = []
    for entry in entries:
        what = entry.action + (f" {format_ref(entry.generation_id)}" if entry.generation_id else "")
        detail = f" ({quote(entry.detail)})" if entry.detail else ""
        lines.append(f"{when(entry.at)} · {mention(entry.user_id)} · {what}{detail}")
    return "\n".join(lines)


def withheld_line(displays: Sequence[str], *, spoilered: str = "") -> str | None:
    """Return the sentence shown instead of withheld (or hidden) images, None when every image is shown.

    `spoilered` is what a platform says about a flagged image it hides behind a click
    (Slack's "Show" button); Discord's spoiler attachments need no sentence.
    """

    def which(kind: str) -> str | None:
        numbers = [str(i) for i, display in enumerate(displays, start=1) if display == kind]
        if not numbers:
            return None
        return "The image" if len(displays) == 1 else f"Image {', '.join(numbers)}"

    lines = []
    if withheld := which("withhold"):
        lines.append(
            f"🔞 {withheld} was withheld: the safety check flagged it, and this server does not show such images."
        )
    if spoilered and (hidden := which("spoiler")):
        lines.append(f"🔞 {hidden} was flagged by the safety check; {spoilered}")
    return "\n".join(lines) or None


def refiner_part(request: GenerationRequest) -> str:
    """Return a history line's refiner split, `` · refiner 17/20`` (the base's share of the steps that run), or ""."""
    return f" · refiner {request.split[0]}/{request.run_steps}" if request.refiner else ""


def history_line(generation: Generation) -> str:
    """Return one generation as a line of a user's history: id, status, seed, model, refiner split, prompt."""
    request = generation.request
    refiner = refiner_part(request)
    prompt = request.prompt if len(request.prompt) <= 50 else request.prompt[:49] + "…"
    return (
        f"`{format_ref(generation.id)}` {generation.status} · seed `{generation.seed}` · {request.model}"
        f"{refiner} · {prompt}"
    )


def gallery_line(link: str, days: float, revoke: str) -> str:
    """Return the private answer to ``gallery``: the link, how long it works, and how to kill it."""
    return (
        f"Your gallery, for {days:g} days: {link}\n"
        f"Anyone with this link sees your images, so keep it to yourself; `{revoke}` makes every link stop working."
    )


def region_line(link: str, ref: str, days: float) -> str:
    """Return the private answer to 🖌️ Vary (Region): the page that selects the parts of image `ref` to make again."""
    return (
        f"🖌️ Select the parts of {ref} to make again, and say what goes there: {link}\n"
        f"The page is in your gallery, for {days:g} days; anyone with the link sees your images,"
        " so keep it to yourself."
    )


GALLERY_REVOKED = "Every gallery link you were given has stopped working; ask for a new one whenever you like."


FORGET_WARNING = "This deletes all your images, their seeds and history, and your settings, for good"


def deleted_line(generation_id: int) -> str:
    """Return what the message that showed a generation says once its author deleted it (in a chat or the gallery)."""
    return f"🗑 {format_ref(generation_id)} was deleted by its author."


def forgotten_line(count: int) -> str:
    """Return what `forget` answers once done."""
    return f"Forgotten: {count} generation" + ("s" if count != 1 else "") + ", their images, and your settings."


def defaults_line(saved: Mapping[str, object], sets: Iterable[str] = ()) -> str:
    """Return a user's saved defaults as one line, and the names of their option sets (`bot.option_sets`)."""
    shown = ", ".join(f"{key}={value}" for key, value in sorted(saved.items()))
    line = "Your defaults: " + (shown or "none (the model's own)")
    names = ", ".join(f"--{name}" for name in sorted(sets))
    return line + (f"; option sets: {names}" if names else "")


def _setting_value(text: str) -> object:
    if text.lower() in ("", "none", "default"):
        return None
    if text.lower() in ("true", "yes", "on", "false", "no", "off"):
        return text.lower() in ("true", "yes", "on")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_setting_pairs(text: str) -> dict[str, object] | None:
    """Parse ``key=value …`` (``none`` removes a key) into changes; None when a word is not a pair."""
    changes: dict[str, object] = {}
    for pair in text.split():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            return None
        changes[key.strip().lower()] = _setting_value(value.strip())
    return changes


def control_line(control: ControlNetSpec, run_steps: int, catalog: Catalog | None = None) -> str:
    """Describe one ControlNet as users see it: its guide's preprocessing, weight, mode and exact steps.

    An IP-Adapter (known with the `catalog`) has only its weight and steps: it reads the image as given
    (a style reference: on the style layers only).
    """
    if control.style:
        what = f"{control.model} (style layers, weight {control.weight:g})"
    elif catalog is not None and catalog.is_ip_adapter(control.model):
        what = f"{control.model} (weight {control.weight:g})"
    else:
        what = f"{control.model} ({control.preprocess}, weight {control.weight:g}, {control.mode})"
    return f"{what} on steps {control.start_step}–{control.end_step} of {run_steps}"
