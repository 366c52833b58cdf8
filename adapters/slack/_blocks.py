"""What the Slack app shows, as Block Kit: the progress card, the result card, the modals, listings.

Pure functions from service values to Slack JSON; nothing here talks to Slack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.actions import WORDS_LOOK, ButtonAction, button_looks, button_rows, encode_action, format_ref, words_id
from bot.catalog import Catalog, CatalogEntry
from bot.chat import EDIT_MOST, OneImage, RemixForm
from bot.controls import BLEND_SHAPES
from bot.history import Generation
from bot.jobs import Job
from bot.options import SDXL_BUCKETS
from bot.request import CONTROL_MODES
from bot.summary import history_line, result_fields

__all__ = [
    "BLEND_SHORTCUT",
    "BLEND_VIEW",
    "COMMAND",
    "DESCRIBE_SHORTCUT",
    "EDIT_VIEW",
    "FILE_BLOCKS",
    "FROM_IMAGE_SHORTCUT",
    "GENERATE_SHORTCUT",
    "GUIDE_SHORTCUT",
    "HELP",
    "IMAGINE_VIEW",
    "PNG_INFO_SHORTCUT",
    "REFINE_SHORTCUT",
    "REFINE_VIEW",
    "REMIX_VIEW",
    "REROLL_SHORTCUT",
    "STYLE_SHORTCUT",
    "Block",
    "Destination",
    "FileRole",
    "SourceFile",
    "blend_modal",
    "blend_target",
    "edit_modal",
    "escape",
    "failed_blocks",
    "history_text",
    "imagine_modal",
    "imagine_options",
    "imagine_source",
    "modal_field",
    "modal_target",
    "one_image_blocks",
    "progress_blocks",
    "refine_modal",
    "remix_modal",
    "remix_target",
    "result_blocks",
    "slack_time",
    "view_values",
    "words_blocks",
]

Block = dict[str, Any]

# The names the app manifest (deploy/slack-manifest.yaml) declares; a test checks both agree.
COMMAND = "/imagine"
GENERATE_SHORTCUT = "generate_image"
REROLL_SHORTCUT = "reroll_image"
REFINE_SHORTCUT = "refine_image"
FROM_IMAGE_SHORTCUT = "imagine_from_image"
GUIDE_SHORTCUT = "use_as_controlnet_guide"
STYLE_SHORTCUT = "use_as_style_reference"
PNG_INFO_SHORTCUT = "png_info"
DESCRIBE_SHORTCUT = "describe_image"
BLEND_SHORTCUT = "blend_images"
IMAGINE_VIEW = "imagine_modal"
REFINE_VIEW = "refine_modal"
EDIT_VIEW = "edit_modal"
BLEND_VIEW = "blend_modal"
REMIX_VIEW = "remix_modal"

HELP = """\
*/imagine* `a red fox --seed 7 --refiner 90 --lora pixel-art:0.8` — make an image. Flags: \
`--seed --steps --refiner --lora --style --no --ar --cfg --sampler --n --model --tile --repeat`; A1111's \
weights: `(words:1.3)`, `(words)`, `[words]`, `BREAK`; LoRA tags: `<lora:pixel-art:0.8>`; \
`a {red, blue} fox` makes a job for each choice, `a {red|blue} fox` draws one, `__name__` a line of a wildcard \
(*/imagine wildcards* `[search]` lists them; */imagine loras* `[search]` the LoRAs)
*/imagine reroll* `[#id]` — same settings, new seed (default: your latest image)
*/imagine refine* `[#id] [percent]` — same seed; the SDXL refiner takes over at percent (85)
*/imagine vary* `subtle|strong [#id[.n]]` — the image again with a new seed · */imagine upscale* `[#id[.n]] [2|4]` · \
*/imagine zoom* `[#id[.n]] [1.5]` — zoom out: the same size, a new border around the image · \
*/imagine pan* `left|right|up|down [#id[.n]]` — a wider or taller canvas, the new strip painted · \
*/imagine square* `[#id[.n]]` — make square: the short side grown to the long one
*/imagine cancel* `[#id]` · */imagine queue* · */imagine history* `[count]` · */imagine info* `[#id]` · \
*/imagine guide* `[#id]` · */imagine edit* `[#id]` — its /imagine text in a form, to change and run
*/imagine blend* `#3 #4 [#5] [prompt]` — one image of your 2 or 3, blended by the model's IP-Adapter \
(the *Blend images* shortcut: a message's 2 or 3 files)
*/imagine describe* `[#id[.n]]` — your image in words, to send with /imagine (the *Describe image* shortcut: any file)
*/imagine settings* `[steps=30 refiner_percent=85 private=true …]` — your defaults (`key=none` removes one)
*/imagine prefer* `[NAME [--flags… | none]]` — your option sets: `prefer mine --ar 2:3`, then `a fox --mine`
*/imagine forget* — delete all your images, seeds and settings (asks first)
*/imagine gallery* `[revoke | showcase]` — a private link to your images on the web (`revoke`: every earlier \
link stops working; `showcase`: the workspace's page of starred images)
*/imagine star* `[#id]` · */imagine unstar* `[#id]` — your image in or out of the workspace's showcase
*/imagine admin* `[audit | ban <word> | unban <n> | models <a,b|all> | max_steps <n> | max_count <n> \
| member_quota <n> | open_reroll on|off | showcase on|off | default_model <name|none>]` — the workspace's rules (admins)
Under an image: the buttons, or react :arrows_counterclockwise: to reroll, :sparkles: to refine, \
:herb: or :tornado: to vary, :x: to delete, :star: to star it for the showcase. The *Generate image* shortcut \
opens a form (with an image \
to start from or a ControlNet guide, if you like); *Reroll image* and *Refine image…* work on an image's message, and \
*Imagine from this image* on any message with a PNG, JPEG or WebP file."""

# The buttons that stand out; every other one has Slack's default look.
_STYLES: dict[ButtonAction, str] = {"reroll": "primary", "delete": "danger", "cancel": "danger"}

# Slack's own limits (Block Kit reference).
_SECTION_TEXT = 3000
_FIELD_TEXT = 2000
_MAX_FIELDS = 10
_OPTION_TEXT = 75
_MAX_OPTIONS = 100


def escape(text: str) -> str:
    """Escape the three characters mrkdwn gives a meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_mrkdwn(text[:_SECTION_TEXT])]}


def _button(action: ButtonAction, generation_id: int, value: str = "", index: int = 0) -> dict[str, Any]:
    emoji, words = button_looks(action, index)
    style = _STYLES.get(action)
    button: dict[str, Any] = {
        "type": "button",
        "action_id": encode_action(action, generation_id, index),
        "text": _plain(f"{emoji} {words}".rstrip()),
        "value": value or str(generation_id),
    }
    if style:
        button["style"] = style
    if action == "delete":
        button["confirm"] = {
            "title": _plain("Delete this image?"),
            "text": _mrkdwn("The image and its history entry are removed for good."),
            "confirm": _plain("Delete"),
            "deny": _plain("Keep"),
            "style": "danger",
        }
    return button


def _prompt_line(prompt: str, limit: int = 300) -> str:
    return escape(prompt if len(prompt) <= limit else prompt[: limit - 1] + "…")


def progress_blocks(job: Job, line: str) -> tuple[str, list[Block]]:
    """Return (fallback text, blocks) of the card while an image is queued or being made (`line`: its progress)."""
    blocks: list[Block] = [
        {"type": "section", "text": _mrkdwn(line)},
        _context(f"<@{job.requester.user_id}> · {_prompt_line(job.request.prompt)}"),
        {"type": "actions", "elements": [_button("cancel", job.id)]},
    ]
    return line, blocks


def failed_blocks(job: Job, line: str) -> tuple[str, list[Block]]:
    """Return (fallback text, blocks) of the card of a failed or cancelled image (`line`: the chat flow's)."""
    return line, [
        {"type": "section", "text": _mrkdwn(escape(line))},
        _context(f"<@{job.requester.user_id}> · {_prompt_line(job.request.prompt)}"),
    ]


def result_blocks(
    generation: Generation,
    file_ids: Sequence[str],
    actions: Sequence[ButtonAction],
    *,
    withheld: str | None = None,
    show: bool = False,
    picks: Sequence[int] = (),
    catalog: Catalog | None = None,
) -> tuple[str, list[Block]]:
    """Return (fallback text, blocks) of a finished image's card: prompt, settings, notes and buttons.

    The `catalog` names IP-Adapters among the ControlNets as such.

    `actions` are the service's `result_actions`. The delete button carries the ids of the
    uploaded files so that deleting removes them too; `withheld` says which images the channel
    does not see, `show` adds the author's "Show" button; `picks` are the images of several that get an
    "Image N" button (none withheld).
    """
    request = generation.request
    fields = [_mrkdwn(f"*{name}*\n{escape(value)}"[:_FIELD_TEXT]) for name, value in result_fields(generation, catalog)]
    blocks: list[Block] = [
        {"type": "section", "text": _mrkdwn(f"*{_prompt_line(request.prompt, 2900)}*"), "fields": fields[:_MAX_FIELDS]}
    ]
    if request.negative_prompt:
        blocks.append(_context(f"*Negative:* {_prompt_line(request.negative_prompt, 1000)}"))
    if generation.warnings:
        blocks.append(_context("\n".join(f"⚠ {escape(warning)}" for warning in generation.warnings)))
    origin = f" · {generation.action} of {format_ref(generation.parent_id)}" if generation.parent_id else ""
    blocks.append(
        _context(
            f"{format_ref(generation.id)}{origin} · <@{generation.user_id}> · "
            "react :arrows_counterclockwise: to reroll, :sparkles: to refine, :herb: or :tornado: to vary"
        )
    )
    if withheld:
        blocks.append(_context(escape(withheld)))
    # Delete carries the image's file ids, so the uploads go with the card.
    extra: list[ButtonAction] = ["show"] if show else []
    files = ",".join(file_ids)
    for row in button_rows([*actions, *extra], picks=picks):
        buttons = [_button(action, generation.id, files if action == "delete" else "", n) for action, n in row]
        blocks.append({"type": "actions", "elements": buttons})
    text = f"{format_ref(generation.id)} · seed {generation.seed} · {request.prompt[:200]}"
    return text, blocks


def one_image_blocks(reply: OneImage) -> list[Block]:
    """Return the private message of one image of a several-image result: what it is, and its own buttons."""
    blocks: list[Block] = [{"type": "section", "text": _mrkdwn(escape(reply.text))}]
    for row in button_rows(reply.actions, index=reply.index):
        blocks.append(
            {"type": "actions", "elements": [_button(action, reply.generation_id, "", n) for action, n in row]}
        )
    return blocks


def words_blocks(text: str, words: Sequence[str]) -> list[Block]:
    """Return a /describe answer (`text`, in mrkdwn) with a button that imagines each of its `words` (its value).

    One: "🎨 Imagine these words"; several: "🎨 1", "🎨 2"… as the answer numbers them.
    """
    emoji, label = WORDS_LOOK
    buttons = [
        {
            "type": "button",
            "action_id": words_id(number),
            "text": _plain(f"{emoji} {label if len(words) == 1 else number}"),
            "value": value,
            "style": "primary",
        }
        for number, value in enumerate(words, start=1)
    ]
    return [{"type": "section", "text": _mrkdwn(text)}, {"type": "actions", "elements": buttons}]


def history_text(generations: Sequence[Generation]) -> str:
    """Return a user's recent generations, one line each."""
    if not generations:
        return "No images yet; make one with `/imagine a red fox`."
    lines = [escape(history_line(generation)) for generation in generations]
    lines.append("Reuse one with `/imagine reroll #id` or `/imagine refine #id 90`.")
    return "\n".join(lines)


def slack_time(at: float) -> str:
    """Return a timestamp that Slack shows in the reader's own time zone."""
    return f"<!date^{int(at)}^{{date_short}} {{time}}|{int(at)}>"


# -- modals -----------------------------------------------------------------------------------------

# Modal blocks are named after the /imagine options they fill; an error about an option lands on its block.
# An error names a filled block's option by its key ("negative"); one left out, by its label ("negative prompt").
_LABEL_BLOCKS = {"negative prompt": "negative", "sref": "style_image"}
# The modal's file inputs: each becomes a token that only the app's loader turns back into a file.
FILE_BLOCKS = ("image", "mask", "control_image", "style_image")
_MODE_LABELS = {
    "balanced": "Balanced",
    "prompt": "My prompt is more important",
    "controlnet": "The ControlNet is more important",
}
_VALUE = "value"
# Which file field a shortcut's file fills (`SourceFile.role`), and its name in a modal's private metadata.
FileRole = Literal["image", "control_image", "style_image"]
_AS: dict[FileRole, str] = {"control_image": "guide", "style_image": "style"}
_TILE_LABEL = "Seamless: the image repeats edge to edge, a texture"
# The file types Slack's file picker offers for an image or a mask (the bytes are checked after all).
_IMAGE_FILETYPES = ["png", "jpg", "jpeg", "webp"]


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": _plain(text[:_OPTION_TEXT]), "value": value}


def _input(block_id: str, label: str, element: dict[str, Any], *, optional: bool = True, hint: str = "") -> Block:
    block: Block = {
        "type": "input",
        "block_id": block_id,
        "label": _plain(label),
        "optional": optional,
        "element": {**element, "action_id": _VALUE},
    }
    if hint:
        block["hint"] = _plain(hint)
    return block


@dataclass(frozen=True, slots=True)
class SourceFile:
    """The image file a message shortcut opened the modal with, and where that message is.

    `role`: the modal's file field it fills: the image to start from ("Imagine from this image"), the
    ControlNet's guide ("Use as ControlNet guide") or the style reference ("Use as style reference").
    """

    file_id: str
    name: str
    channel: str
    thread_ts: str | None = None
    role: FileRole = "image"


def _file_input() -> dict[str, Any]:
    return {"type": "file_input", "filetypes": _IMAGE_FILETYPES, "max_files": 1}


def _number_input(low: int, high: int, *, decimal: bool = False) -> dict[str, Any]:
    return {"type": "number_input", "is_decimal_allowed": decimal, "min_value": str(low), "max_value": str(high)}


def _described(entries: Iterable[CatalogEntry]) -> list[dict[str, Any]]:
    """Return select options for catalog entries, each labelled with its description where it has one."""
    options = [
        _option(f"{entry.name} — {entry.description}" if entry.description else entry.name, entry.name)
        for entry in entries
    ]
    return options[:_MAX_OPTIONS]


def imagine_modal(catalog: Catalog, default_model: str, source: SourceFile | None = None) -> dict[str, Any]:
    """Return the "Generate image" modal: prompt, settings, LoRAs, model, style, size, tile, image, ControlNet, channel.

    The style and the ControlNet fields (guide, ControlNet, weight, start, end, mode) come when the
    catalog has any.

    Opened from a message (`source`), the image is that message's file, named in the modal and
    carried in its metadata (Slack's file input cannot be pre-filled), and the conversation is that one.
    """
    models = [_option(entry.name, entry.name) for entry in catalog.entries("model")][:_MAX_OPTIONS]
    loras = _described(catalog.entries("lora"))
    sizes = [_option(f"{w}×{h}", f"{w}x{h}") for w, h in SDXL_BUCKETS]
    controlnets = _described(catalog.entries("controlnet"))
    styles = _described(catalog.entries("style"))
    blocks = [
        _input(
            "prompt",
            "Prompt",
            {"type": "plain_text_input", "multiline": True, "max_length": 3000},
            optional=False,
            hint="Flags such as --ar 16:9 work here too.",
        ),
        _input("negative", "Negative prompt", {"type": "plain_text_input", "max_length": 3000}),
        _input("seed", "Seed", {"type": "plain_text_input"}, hint="Empty: a new random seed."),
        _input("steps", "Steps", _number_input(1, 100)),
        _input(
            "refiner",
            "Refiner from %",
            _number_input(0, 99),
            hint="The SDXL refiner takes over at this percent of the steps; 85-90 works best, 0 is off.",
        ),
        _input("model", "Model", {"type": "static_select", "options": models}, hint=f"Empty: {default_model}."),
        _input("size", "Size", {"type": "static_select", "options": sizes}),
        _input("tile", "Tile", {"type": "checkboxes", "options": [_option(_TILE_LABEL, "on")]}),
    ]
    if styles:
        hint = "Its words go around your prompt and into the negative; empty: none."
        blocks.insert(-2, _input("style", "Style", {"type": "static_select", "options": styles}, hint=hint))
    if loras:
        blocks.append(
            _input("lora", "LoRAs", {"type": "multi_static_select", "options": loras, "max_selected_items": 5})
        )
    role, name = (source.role, escape(source.name[:200])) if source is not None else (None, "")
    if role != "image":
        blocks.append(_input("image", "Start from an image", _file_input(), hint="PNG, JPEG or WebP."))
    else:
        blocks.append(_context(f"Starting from *{name}*."))
    blocks += [
        _input(
            "strength",
            "Strength",
            _number_input(0, 1, decimal=True),
            hint="With an image: how much of it is made again, 0-1 (0.8); lower keeps more of it.",
        ),
        _input("mask", "Mask", _file_input(), hint="With an image: white repaints, black keeps."),
        _input(
            "style_image",
            "Style reference",
            _file_input(),
            hint="Its look, not what it shows (--sref); --sw 50 in the prompt makes it weaker. PNG, JPEG or WebP.",
        )
        if role != "style_image"
        else _context(f"In the style of *{name}* (--sw 50 in the prompt makes it weaker)."),
    ]
    if controlnets:
        blocks += _control_blocks(controlnets, name if role == "control_image" else None)
    conversation: dict[str, Any] = {"type": "conversations_select", "default_to_current_conversation": True}
    if source is not None:
        conversation["initial_conversation"] = source.channel
    blocks.append(_input("channel", "Post in", conversation, hint="Empty: a direct message to you."))
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": IMAGINE_VIEW,
        "title": _plain("Generate image"),
        "submit": _plain("Generate"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }
    if source is not None:
        metadata = {
            "file": source.file_id,
            "name": source.name,
            "channel": source.channel,
            "thread_ts": source.thread_ts,
        }
        view["private_metadata"] = json.dumps(metadata | ({"as": _AS[source.role]} if source.role != "image" else {}))
    return view


def _control_blocks(controlnets: list[dict[str, Any]], guide: str | None = None) -> list[Block]:
    """Return the modal's ControlNet fields: the guide, which ControlNet, its weight, steps and mode.

    `guide` names the message's file that is the guide ("Use as ControlNet guide"): it stands in for
    the file input, and the first ControlNet is chosen already.
    """
    modes = [_option(_MODE_LABELS[mode], mode) for mode in CONTROL_MODES]
    step = "a step like 10 or a percentage like 40%"
    which: dict[str, Any] = {"type": "static_select", "options": controlnets}
    if guide is None:
        given: Block = _input(
            "control_image",
            "ControlNet guide",
            _file_input(),
            hint="Its edges (or depth…) shape the image; PNG, JPEG or WebP.",
        )
    else:
        given = _context(f"Guided by *{escape(guide[:200])}*.")
        which["initial_option"] = controlnets[0]
    return [
        given,
        _input("control", "ControlNet", which),
        _input(
            "control_weight",
            "ControlNet weight",
            _number_input(0, 2, decimal=True),
            hint="How strongly it steers, 0-2 (1).",
        ),
        _input("control_start", "ControlNet start", {"type": "plain_text_input"}, hint=f"The first step: {step}."),
        _input("control_end", "ControlNet end", {"type": "plain_text_input"}, hint=f"The last step: {step}."),
        _input("control_mode", "ControlNet mode", {"type": "static_select", "options": modes}),
    ]


def imagine_source(view: Mapping[str, Any]) -> SourceFile | None:
    """Return the image file a "Generate image" modal was opened with, if a message shortcut opened it."""
    metadata = json.loads(view.get("private_metadata") or "{}")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("file"), str):
        return None
    return SourceFile(
        metadata["file"],
        str(metadata.get("name") or ""),
        str(metadata["channel"]),
        metadata.get("thread_ts"),
        role=next((role for role, name in _AS.items() if name == metadata.get("as")), "image"),
    )


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a job's card goes: a channel (or DM), maybe a thread; carried through a modal."""

    channel: str
    thread_ts: str | None = None


def _target(generation_id: int, where: Destination) -> str:
    """Return a modal's private metadata: the generation it acts on and where its result goes."""
    return json.dumps({"id": generation_id, "channel": where.channel, "thread_ts": where.thread_ts})


def refine_modal(generation_id: int, where: Destination, percent: int) -> dict[str, Any]:
    """Return the "Refine image…" modal asking where the refiner starts."""
    element = {**_number_input(1, 99), "initial_value": str(percent)}
    return {
        "type": "modal",
        "callback_id": REFINE_VIEW,
        "private_metadata": _target(generation_id, where),
        "title": _plain("Refine image"),
        "submit": _plain("Refine"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "section", "text": _mrkdwn(f"Refine {format_ref(generation_id)} with the same seed.")},
            _input(
                "percent",
                "Refiner from %",
                element,
                optional=False,
                hint="The base model runs this share of the steps; the refiner the rest.",
            ),
        ],
    }


def edit_modal(generation_id: int | None, where: Destination, text: str) -> dict[str, Any]:
    """Return the Edit modal: a result's /imagine text (prompt and flags) to change and run as a new image.

    Without a generation (None), it holds a /describe answer's words: "Imagine these words".
    """
    element = {"type": "plain_text_input", "multiline": True, "initial_value": text, "max_length": EDIT_MOST}
    whose = "Prompt and flags" if generation_id is None else f"{format_ref(generation_id)}: prompt and flags"
    return {
        "type": "modal",
        "callback_id": EDIT_VIEW,
        "private_metadata": _target(generation_id or 0, where),  # 0: no generation (ids start at 1)
        "title": _plain("Edit and imagine" if generation_id is not None else WORDS_LOOK[1]),
        "submit": _plain("Imagine"),
        "close": _plain("Cancel"),
        "blocks": [
            _input(
                "text",
                whose,
                element,
                optional=False,
                hint="Change the words or any flag; a new image is made, this one stays.",
            )
        ],
    }


def remix_modal(form: RemixForm, where: Destination) -> dict[str, Any]:
    """Return the Remix modal: a result's prompt to re-word before its Vary, Zoom Out, Make Square or Pan runs.

    What to run, on which image, and where the card goes are carried in the metadata; the action is
    checked again when it comes back (`bot.chat.ChatFlow.remix`).
    """
    metadata = {
        "id": form.generation_id,
        "index": form.index,
        "action": form.action,
        "channel": where.channel,
        "thread_ts": where.thread_ts,
    }
    element = {"type": "plain_text_input", "multiline": True, "initial_value": form.prompt, "max_length": 3000}
    return {
        "type": "modal",
        "callback_id": REMIX_VIEW,
        "private_metadata": json.dumps(metadata),
        "title": _plain("Remix"),
        "submit": _plain("Remix"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "section", "text": _mrkdwn(escape(form.title))},
            _input(
                "prompt",
                "Prompt",
                element,
                optional=False,
                hint="Change the words; the image keeps its settings (✏️ Edit changes those).",
            ),
        ],
    }


def remix_target(view: Mapping[str, Any]) -> tuple[str, int, int, Destination]:
    """Return the action, generation id, image index and destination a Remix modal was opened for."""
    metadata = json.loads(view.get("private_metadata") or "{}")
    where = Destination(str(metadata["channel"]), metadata.get("thread_ts"))
    return str(metadata["action"]), int(metadata["id"]), int(metadata["index"]), where


def blend_modal(files: Sequence[Mapping[str, Any]], where: Destination) -> dict[str, Any]:
    """Return the "Blend images" modal (Midjourney's /blend): words to add and a shape for a message's image files.

    The files are named, and carried in the metadata with where the card goes (the message's channel and thread).
    """
    names = ", ".join(f"*{escape(str(file.get('name') or file['id'])[:100])}*" for file in files)
    metadata = {"files": [file["id"] for file in files], "channel": where.channel, "thread_ts": where.thread_ts}
    shapes = [_option(name, ratio) for name, ratio in BLEND_SHAPES]
    return {
        "type": "modal",
        "callback_id": BLEND_VIEW,
        "private_metadata": json.dumps(metadata),
        "title": _plain("Blend images"),
        "submit": _plain("Blend"),
        "close": _plain("Cancel"),
        "blocks": [
            {"type": "section", "text": _mrkdwn(f"Blend {names}, each an equal share.")},
            _input(
                "prompt",
                "Words",
                {"type": "plain_text_input", "multiline": True, "max_length": 3000},
                hint="What to add to the images; flags such as --seed 7 work. Empty: the images decide.",
            ),
            _input("dimensions", "Shape", {"type": "static_select", "options": shapes}, hint="Empty: the model's own."),
        ],
    }


def blend_target(view: Mapping[str, Any]) -> tuple[list[str], Destination]:
    """Return the file ids and the destination a "Blend images" modal was opened for."""
    metadata = json.loads(view.get("private_metadata") or "{}")
    files = [str(file) for file in metadata.get("files") or []]
    return files, Destination(str(metadata["channel"]), metadata.get("thread_ts"))


def modal_target(view: Mapping[str, Any]) -> tuple[int, Destination]:
    """Return the generation id and destination a refine or edit modal was opened for."""
    metadata = json.loads(view.get("private_metadata") or "{}")
    return int(metadata["id"]), Destination(str(metadata["channel"]), metadata.get("thread_ts"))


def view_values(view: Mapping[str, Any]) -> dict[str, str | list[str] | None]:
    """Return block id → the value of its input: text, a selected value, selected values, or None."""
    values: dict[str, str | list[str] | None] = {}
    for block_id, actions in (view.get("state") or {}).get("values", {}).items():
        state = actions.get(_VALUE) or {}
        kind = state.get("type")
        if kind == "static_select":
            values[block_id] = (state.get("selected_option") or {}).get("value")
        elif kind == "multi_static_select":
            values[block_id] = [option["value"] for option in state.get("selected_options") or []]
        elif kind == "checkboxes":  # ours hold one option (the tile switch): its value when ticked
            ticked = state.get("selected_options") or []
            values[block_id] = ticked[0].get("value") if ticked else None
        elif kind == "conversations_select":
            values[block_id] = state.get("selected_conversation")
        elif kind == "file_input":  # max_files is 1: the file's id, which files.info describes
            files = state.get("files") or []
            values[block_id] = files[0].get("id") if files else None
        else:
            values[block_id] = state.get("value")
    return values


def imagine_options(view: Mapping[str, Any]) -> tuple[dict[str, object], str | None]:
    """Return the "Generate image" modal's options as `ImageService.imagine` takes them, and the chosen conversation."""
    values = view_values(view)
    channel = values.pop("channel", None)
    loras = values.pop("lora", None) or []
    given: dict[str, object] = {key: value for key, value in values.items() if value not in (None, "")}
    if loras:
        given["lora"] = ", ".join(loras)
    return given, channel if isinstance(channel, str) else None


def modal_field(option: str | None, filled: set[str], shown: set[str] | None = None) -> str:
    """Return the modal block an error about `option` belongs on: its own when filled in and shown, else the prompt."""
    # `filled` holds only the modal's own block ids, so an option that is no block is never in it.
    block = _LABEL_BLOCKS.get(option or "", option)
    if block is None or block not in filled or (shown is not None and block not in shown):
        return "prompt"
    return block
