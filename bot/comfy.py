"""ComfyUI's images for PNG info: the workflow a ComfyUI PNG carries, read as A1111 parameters text.

ComfyUI saves no ``parameters`` text; it keeps the graph it ran as JSON in the PNG's ``prompt``
text chunk (the API format: node id → ``class_type`` and ``inputs``, a link being ``[node id,
output]``). The sampler node that made the image (a ``KSampler`` whose latent starts empty, else
the first) names the seed, steps, CFG scale, sampler and scheduler; where it ends early, a
second sampler that goes on from its latent is SDXL's refiner; its ``positive`` and
``negative`` links lead to the text encoders' prompts; its ``model`` link leads through LoRA
loaders to the checkpoint, and the text encoder's CLIP to a ``CLIPSetLastLayer`` (clip skip); its
latent to the size, and the decoder of the last latent to a ``VAELoader``. Written as A1111 writes
them, they go through `bot.pnginfo` like any other image's text. The JSON is anyone's: any shape
reads as far as it can, every link is followed a bounded number of hops, and a graph with no
sampler reads as nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from bot.pngmeta import number_text, write_parameters

__all__ = ["MOST_JSON", "parameters_of_workflow"]

# The most characters of workflow read: ComfyUI's graphs are a few to some tens of kilobytes.
MOST_JSON = 256 * 1024
# Links followed from one input: ComfyUI's graphs reach a value through a node or two (a primitive, a reroute).
_HOPS = 8
_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom")
_EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage")
_LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
# ComfyUI's sampler and scheduler names → A1111's, as `bot.rules` reads them.
_SAMPLER_NAMES = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "ddim": "DDIM",
    "lcm": "LCM",
}
_SCHEDULER_NAMES = {"karras": "Karras", "normal": "Normal", "exponential": "Exponential", "simple": "Simple"}


def parameters_of_workflow(text: str) -> str | None:
    """Return the A1111 parameters text that a ComfyUI ``prompt`` chunk's graph describes, or None for no graph."""
    if len(text) > MOST_JSON:
        return None
    try:
        graph = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: brackets nested past Python's stack
        return None
    if not isinstance(graph, dict):
        return None
    nodes = {
        key: node for key, node in graph.items() if isinstance(node, dict) and isinstance(node.get("inputs"), dict)
    }
    sampler = _sampler(nodes)
    if sampler is None:
        return None
    inputs = sampler["inputs"]
    model, loras = _model(nodes, inputs.get("model"))
    fields: dict[str, str] = {}
    for field, keys in (("Steps", ("steps",)), ("CFG scale", ("cfg",)), ("Seed", ("seed", "noise_seed"))):
        value = next((_value(nodes, inputs.get(key)) for key in keys if key in inputs), None)
        if _is_number(value):
            fields[field] = _number(value)
    sampler_name = _value(nodes, inputs.get("sampler_name"))
    if isinstance(sampler_name, str) and sampler_name:
        fields["Sampler"] = _SAMPLER_NAMES.get(sampler_name, sampler_name)
        scheduler = _value(nodes, inputs.get("scheduler"))
        if isinstance(scheduler, str) and scheduler:
            fields["Schedule type"] = _SCHEDULER_NAMES.get(scheduler, scheduler)
    size = _size(nodes, inputs.get("latent_image"))
    if size is not None:
        fields["Size"] = f"{size[0]}x{size[1]}"
    if model:
        fields["Model"] = model
    refined, refiner = _refiner(nodes, sampler)
    fields |= refined
    clip_skip = _clip_skip(nodes, inputs.get("positive"))
    if clip_skip is not None:
        fields["Clip skip"] = clip_skip
    vae = _vae(nodes, refiner or sampler)
    if vae:
        fields["VAE"] = vae
    return write_parameters(
        _text(nodes, inputs.get("positive")) or "",
        _text(nodes, inputs.get("negative")),
        loras,
        # Steps marks the line of fields to `bot.pngmeta.parse_parameters`: without it there is none.
        fields if "Steps" in fields else {},
    )


def _sampler(nodes: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Return the sampler that made the image: one that starts from an empty latent, else the first."""
    samplers = [node for _, node in sorted(nodes.items(), key=_order) if node.get("class_type") in _SAMPLERS]
    for node in samplers:
        latent = _node(nodes, node["inputs"].get("latent_image"))
        if latent is not None and latent.get("class_type") in _EMPTY_LATENTS:
            return node
    return samplers[0] if samplers else None


def _refiner(
    nodes: Mapping[str, dict[str, Any]], sampler: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Return A1111's refiner fields of SDXL's two-sampler graph and the refiner's sampler, or none.

    The base's ``KSamplerAdvanced`` ends at a step before its last, and a second one, whose latent is the
    base's, runs the rest on the refiner's checkpoint.
    """
    steps, end = (_value(nodes, sampler["inputs"].get(name)) for name in ("steps", "end_at_step"))
    if not (isinstance(steps, int) and isinstance(end, int) and 0 < end < steps < 10_000):
        return {}, None
    for node in nodes.values():
        latent = node["inputs"].get("latent_image")
        if node.get("class_type") in _SAMPLERS and _node(nodes, latent) is sampler and node is not sampler:
            refiner, _ = _model(nodes, node["inputs"].get("model"))
            if refiner:
                return {"Refiner": refiner, "Refiner switch at": number_text(round(end / steps, 4))}, node
    return {}, None


def _clip_skip(nodes: Mapping[str, dict[str, Any]], link: object) -> str | None:
    """Return A1111's clip skip of the text encoder a conditioning link leads to, or None.

    From a ``CLIPSetLastLayer`` between it and the checkpoint: its ``-2`` is A1111's 2.
    """
    encoder = _node(nodes, link)
    node = None if encoder is None else _node(nodes, encoder["inputs"].get("clip"))
    for _ in range(_HOPS):
        if node is None:
            return None
        inputs = node["inputs"]
        if node.get("class_type") == "CLIPSetLastLayer":
            layer = _value(nodes, inputs.get("stop_at_clip_layer"))
            return str(-layer) if isinstance(layer, int) and not isinstance(layer, bool) and -24 <= layer < 0 else None
        node = _node(nodes, inputs.get("clip"))  # through LoRA loaders, which take the CLIP too
    return None


def _vae(nodes: Mapping[str, dict[str, Any]], sampler: dict[str, Any]) -> str | None:
    """Return the VAE file (its stem) that decoded the last sampler's latent, where a ``VAELoader`` loaded one."""
    for node in nodes.values():
        inputs = node["inputs"]
        decodes = node.get("class_type") == "VAEDecode" and _node(nodes, inputs.get("samples")) is sampler
        loader = _node(nodes, inputs.get("vae")) if decodes else None
        if loader is not None and loader.get("class_type") == "VAELoader":
            name = _value(nodes, loader["inputs"].get("vae_name"))
            return _stem(name) if isinstance(name, str) and name else None
    return None


def _order(item: tuple[str, object]) -> tuple[int, str]:
    """Order node ids as ComfyUI numbers them: "3" before "10"; other keys after."""
    key = item[0]
    return (int(key), key) if key.isdigit() and len(key) < 10 else (2**40, key)


def _node(nodes: Mapping[str, dict[str, Any]], link: object) -> dict[str, Any] | None:
    """Return the node a link ``[id, output]`` points at, or None."""
    if isinstance(link, list) and link and isinstance(link[0], str | int):
        return nodes.get(str(link[0]))
    return None


def _value(nodes: Mapping[str, dict[str, Any]], value: object) -> object:
    """Return an input's value, following links through primitive and reroute nodes for a few hops."""
    for _ in range(_HOPS):
        node = _node(nodes, value)
        if node is None:
            return value
        inputs = node["inputs"]
        value = next(
            (inputs[key] for key in ("value", "seed", "text", "string", "int", "float") if key in inputs), None
        )
    return None


def _text(nodes: Mapping[str, dict[str, Any]], link: object) -> str | None:
    """Return the prompt a conditioning link leads to: its text encoder's text (SDXL's ``text_g``)."""
    node = _node(nodes, link)
    for _ in range(_HOPS):
        if node is None:
            return None
        inputs = node["inputs"]
        for key in ("text", "text_g", "prompt"):
            if key in inputs:
                text = _value(nodes, inputs[key])
                return text.strip() if isinstance(text, str) else None
        # A conditioning node between (a combine, a ControlNet apply): follow its conditioning.
        node = _node(nodes, inputs.get("conditioning") or inputs.get("conditioning_1") or inputs.get("positive"))
    return None


def _model(nodes: Mapping[str, dict[str, Any]], link: object) -> tuple[str | None, list[tuple[str, float]]]:
    """Return the checkpoint a model link leads to (its file's stem) and the LoRAs loaded on the way."""
    loras: list[tuple[str, float]] = []
    node = _node(nodes, link)
    for _ in range(_HOPS):
        if node is None:
            break
        inputs = node["inputs"]
        if node.get("class_type") in _LORA_LOADERS:
            name, weight = _value(nodes, inputs.get("lora_name")), _value(nodes, inputs.get("strength_model"))
            if isinstance(name, str) and name and isinstance(weight, int | float) and _is_number(weight):
                loras.append((_stem(name), float(weight)))
        elif "ckpt_name" in inputs or "unet_name" in inputs:
            name = _value(nodes, inputs.get("ckpt_name", inputs.get("unet_name")))
            return (_stem(name) if isinstance(name, str) and name else None), loras[::-1]
        node = _node(nodes, inputs.get("model"))
    return None, loras[::-1]


def _size(nodes: Mapping[str, dict[str, Any]], link: object) -> tuple[int, int] | None:
    node = _node(nodes, link)
    if node is None or node.get("class_type") not in _EMPTY_LATENTS:
        return None
    width, height = _value(nodes, node["inputs"].get("width")), _value(nodes, node["inputs"].get("height"))
    if isinstance(width, int) and isinstance(height, int) and 0 < width < 100_000 and 0 < height < 100_000:
        return width, height
    return None


def _stem(name: str) -> str:
    """Return a model file's name without folders and extension, as A1111 names a model."""
    return PurePosixPath(name.replace("\\", "/")).stem or name


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 2**64


def _number(value: object) -> str:
    assert isinstance(value, int | float)
    return str(value) if isinstance(value, int) else number_text(value)
