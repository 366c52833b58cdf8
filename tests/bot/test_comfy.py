"""ComfyUI's PNGs in PNG info: the graph in the ``prompt`` chunk read as the A1111 text and the /imagine here."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.comfy import parameters_of_workflow
from bot.errors import InvalidOption
from bot.options import Defaults, Limits, parse_text
from bot.pngmeta import parse_parameters
from tests.bot.test_pnginfo import command_of, png
from tests.properties.sentences import assert_sentence

CATALOG = load_catalog()
DEFAULTS = Defaults(model="sdxl")
LIMITS = Limits(pixel_budget=4 * 1024 * 1024)


def default_graph() -> dict[str, Any]:
    """ComfyUI's default text-to-image graph as it saves it (the API format), SDXL at 1024²."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 156680208700286,
                "steps": 25,
                "cfg": 6.5,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "SDXL/sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 1216, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle on a hill, golden hour", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, lowres", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def reply_of(graph: object, **chunks: str) -> str:
    from bot.pnginfo import png_info

    return png_info(png(prompt=json.dumps(graph), **chunks), "comfy.png", CATALOG, DEFAULTS, LIMITS)


def test_the_default_graph_reads_as_its_a1111_text_and_an_imagine_here():
    text = parameters_of_workflow(json.dumps(default_graph()))
    assert text == (
        "a castle on a hill, golden hour\nNegative prompt: blurry, lowres\nSteps: 25, CFG scale: 6.5, "
        "Seed: 156680208700286, Sampler: DPM++ 2M, Schedule type: Karras, Size: 832x1216, Model: sd_xl_base_1.0"
    )
    reply = reply_of(default_graph())
    assert reply.startswith("PNG info of comfy.png (its ComfyUI workflow, as A1111 writes it):\n```\na castle on")
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert (request.prompt, request.negative_prompt) == ("a castle on a hill, golden hour", "blurry, lowres")
    assert (request.steps, request.cfg_scale, request.seed, request.width, request.height) == (
        25,
        6.5,
        156680208700286,
        832,
        1216,
    )
    assert request.scheduler == "DPM++ 2M Karras"
    # Stability's file name is the catalog's sdxl (`Catalog.find_written`): nothing is left out.
    assert request.model == "sdxl" and "Left out" not in reply


def test_clip_skip_and_a_vae_loader_are_read_as_a1111_writes_them():
    """A ``CLIPSetLastLayer`` at -3 behind a LoRA loader is A1111's Clip skip 3 (this bot's 1); a VAE loaded apart
    from the checkpoint is its VAE, the catalog's when it has that file."""
    graph = default_graph()
    graph["6"]["inputs"]["clip"] = ["11", 1]
    graph["11"] = {"class_type": "LoraLoader", "inputs": {"lora_name": "pixel-art-xl.safetensors", "clip": ["12", 0],
                   "model": ["4", 0], "strength_model": 0.5, "strength_clip": 0.5}}  # fmt: skip
    graph["12"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -3}}
    graph["13"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl-vae-fp16-fix.safetensors"}}
    graph["8"]["inputs"]["vae"] = ["13", 0]
    text = parameters_of_workflow(json.dumps(graph))
    assert text is not None and text.endswith(", Model: sd_xl_base_1.0, Clip skip: 3, VAE: sdxl-vae-fp16-fix")
    request = parse_text(command_of(reply_of(graph)), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert (request.clip_skip, request.vae) == (1, "sdxl-vae-fp16-fix")
    # A layer that is no layer (0, a string, a link nowhere) is no clip skip; a VAE decoding another latent is not it.
    for layer in (0, "-2", ["99", 0]):
        graph["12"]["inputs"]["stop_at_clip_layer"] = layer
        assert "Clip skip" not in (parameters_of_workflow(json.dumps(graph)) or "")
    graph["8"]["inputs"]["samples"] = ["99", 0]
    assert "VAE" not in (parameters_of_workflow(json.dumps(graph)) or "")


def test_sdxl_s_base_and_refiner_graph_reads_as_a1111_s_refiner_switch():
    """ComfyUI's SDXL workflow: the base's KSamplerAdvanced ends at step 24 of 30, the refiner's goes on from its
    latent on the refiner's checkpoint, and a VAE decodes the refiner's latent: --refiner 80 and that VAE here."""
    graph = default_graph()
    advanced = {"add_noise": "enable", "noise_seed": 7, "steps": 30, "cfg": 7, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0]}  # fmt: skip
    graph["3"] = {"class_type": "KSamplerAdvanced", "inputs": advanced | {"model": ["4", 0], "latent_image": ["5", 0],
                  "start_at_step": 0, "end_at_step": 24, "return_with_leftover_noise": "enable"}}  # fmt: skip
    graph["10"] = {"class_type": "KSamplerAdvanced", "inputs": advanced | {"model": ["11", 0], "latent_image": ["3", 0],
                   "start_at_step": 24, "end_at_step": 10000, "add_noise": "disable"}}  # fmt: skip
    graph["11"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_refiner_1.0.safetensors"}}
    graph["12"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl-vae-fp16-fix.safetensors"}}
    graph["8"]["inputs"] |= {"samples": ["10", 0], "vae": ["12", 0]}
    text = parameters_of_workflow(json.dumps(graph))
    assert text is not None and "Refiner: sd_xl_refiner_1.0, Refiner switch at: 0.8, VAE: sdxl-vae-fp16-fix" in text
    reply = reply_of(graph)
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert request.refiner is not None and request.refiner.start_percent == 80 and request.split == (24, 6)
    assert (request.seed, request.vae, request.model) == (7, "sdxl-vae-fp16-fix", "sdxl") and "Left out" not in reply
    # A base that runs to its last step has no refiner after it.
    graph["3"]["inputs"]["end_at_step"] = 10000
    assert "Refiner" not in (parameters_of_workflow(json.dumps(graph)) or "")


def test_loras_links_primitives_and_a_second_pass_are_followed():
    """LoRA loaders between the checkpoint and the sampler become <lora:…> tags; a seed and a prompt from other
    nodes are read through their links; a hires-fix pass (its latent upscaled, not empty) is not the one read."""
    graph = default_graph()
    graph["3"]["inputs"] |= {"model": ["11", 0], "seed": ["12", 0]}
    graph["6"]["inputs"]["text"] = ["13", 0]
    graph["10"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "lora_name": "pixel-art.safetensors",
            "strength_model": 0.8,
            "strength_clip": 1,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
    }
    graph["11"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"lora_name": "loras\\moody.safetensors", "strength_model": 1.0, "model": ["10", 0]},
    }
    graph["12"] = {"class_type": "PrimitiveNode", "inputs": {"value": 42}}
    graph["13"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a red fox"}}
    graph["2"] = {"class_type": "KSampler", "inputs": {**graph["3"]["inputs"], "steps": 10, "latent_image": ["14", 0]}}
    graph["14"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "scale_by": 1.5}}
    parsed = parse_parameters(parameters_of_workflow(json.dumps(graph)) or "")
    assert parsed["prompt"] == "a red fox"
    assert parsed["loras"] == [("pixel-art", 0.8), ("moody", 1.0)]
    assert (parsed["fields"]["Seed"], parsed["fields"]["Steps"]) == ("42", "25")
    reply = reply_of(graph)
    request = parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS).request
    assert [(lora.name, lora.weight) for lora in request.loras] == [("pixel-art", 0.8)]
    assert "LoRA 'moody'" in reply


def test_an_a1111_text_beside_a_graph_is_the_one_read():
    reply = reply_of(default_graph(), parameters="a snowy owl\nSteps: 20, Seed: 3")
    assert reply.startswith("PNG info of comfy.png:\n```\na snowy owl")


def test_what_is_no_graph_with_a_sampler_is_no_parameters():
    for chunk in [
        "",
        "null",
        "[1, 2]",
        '{"1": {"class_type": "SaveImage", "inputs": {}}}',
        "{" * 50_000,
        "[" * 100_000,
    ]:
        assert parameters_of_workflow(chunk) is None
    try:
        reply_of({"1": {"class_type": "VAEDecode", "inputs": {}}})
    except InvalidOption as error:
        assert str(error) == "PNG info finds no generation parameters in comfy.png."
    else:
        raise AssertionError("a graph without a sampler gave a reply")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["KSampler", "CLIPTextEncode", "EmptyLatentImage", "LoraLoader", "3", "4"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "class_type",
                    "inputs",
                    "text",
                    "seed",
                    "model",
                    "positive",
                    "latent_image",
                    "width",
                    "lora_name",
                    "strength_model",
                    "ckpt_name",
                    "3",
                    "4",
                    "5",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)
links = st.lists(st.sampled_from(["3", "4", "5", 3, 4, "9"]), min_size=1, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["3", "4", "5", "6"]),
        st.fixed_dictionaries(
            {"class_type": st.sampled_from(["KSampler", "CLIPTextEncode", "EmptyLatentImage", "LoraLoader", "x"])},
            optional={
                "inputs": st.dictionaries(
                    st.sampled_from(
                        [
                            "seed",
                            "steps",
                            "cfg",
                            "text",
                            "model",
                            "positive",
                            "negative",
                            "latent_image",
                            "width",
                            "height",
                            "lora_name",
                            "strength_model",
                            "ckpt_name",
                            "sampler_name",
                        ]
                    ),
                    json_values | links,
                    max_size=8,
                )
            },
        ),
        max_size=4,
    )
    | json_values
)
def test_any_graph_gives_a_reply_or_one_sentence(graph):
    """Any JSON in the chunk, graph-shaped or not, links pointing anywhere (at themselves too): a reply whose
    /imagine this bot's parser takes, or one sentence; never a traceback."""
    try:
        reply = reply_of(graph)
    except InvalidOption as error:
        assert_sentence(error)
        return
    assert len(reply) <= 2000
    if "As /imagine here:" in reply:
        parse_text(command_of(reply), catalog=CATALOG, defaults=DEFAULTS, limits=LIMITS)
