"""Catalog annotators and IP-Adapters: what makes a guide map or reads an image, and what the catalog refuses."""

from __future__ import annotations

import pytest

from bot.catalog import Catalog, load_catalog


def test_the_shipped_catalog_has_depth_and_pose_annotators_each_with_a_tiny_one():
    """Depth Anything and ViTPose live under the data dir; the tiny ones are built offline."""
    catalog = load_catalog()
    assert catalog.names("annotator") == ["depth-anything-v2-small", "tiny-depth", "tiny-pose", "vitpose-base-simple"]
    own = catalog.get("annotator", "depth-anything-v2-small")
    assert (own.preprocess, own.local) == ("depth", "./annotators/depth-anything-v2-small")
    assert catalog.get("annotator", "tiny-depth").local == "tiny:depth"
    pose = catalog.get("annotator", "vitpose-base-simple")
    assert (pose.preprocess, pose.local) == ("openpose", "./annotators/vitpose-base-simple")
    tiny_pose = catalog.get("annotator", "tiny-pose")
    assert (tiny_pose.preprocess, tiny_pose.local) == ("openpose", "tiny:pose")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('local = "depth-anything/Depth-Anything-V2-Small-hf"\npreprocess = "depth"', "never downloaded"),
        ('local = "./annotators/x"', "names no preprocess"),
    ],
)
def test_an_annotator_without_a_preprocess_or_with_a_repo_id_is_refused(fields, message):
    """A repo id would be downloaded while a request waits; without `preprocess` it makes nothing."""
    with pytest.raises(ValueError, match=message):
        Catalog.from_toml(f'[annotator.x]\narchitecture = "depth-anything"\n{fields}\n')


@pytest.mark.parametrize(
    ("table", "fields"),
    [
        ("controlnet", "ip_adapter = true"),  # no encoder to read the image with
        ("controlnet", 'ip_adapter = true\nimage_encoder = "image_encoder"\npreprocess = "canny"'),
        ("controlnet", 'image_encoder = "image_encoder"'),  # an encoder, but a ControlNet that reads maps
        ("lora", 'ip_adapter = true\nimage_encoder = "image_encoder"'),
    ],
)
def test_an_ip_adapter_is_a_controlnet_with_an_image_encoder_and_no_preprocess(table, fields):
    with pytest.raises(ValueError, match="an IP-Adapter is a controlnet with an image_encoder and no preprocess"):
        Catalog.from_toml(f'[{table}.x]\narchitecture = "sdxl"\nlocal = "org/x"\n{fields}\n')
    shipped = load_catalog().get("controlnet", "ip-adapter-sdxl")
    assert (shipped.ip_adapter, shipped.image_encoder, shipped.preprocess) == (True, "models/image_encoder", None)


def test_a_models_blend_names_one_of_the_catalogs_ip_adapters():
    """`/blend` uses the model's `blend`: the shipped models name theirs, and only an IP-Adapter will do."""
    from bot.controls import Guide, build_controls
    from bot.errors import InvalidOption

    shipped = load_catalog()
    assert {name: shipped.get("model", name).blend for name in shipped.names("model")} == {
        "sdxl": "ip-adapter-sdxl",
        "sdxl-turbo": "ip-adapter-sdxl",
        "tiny": "tiny-ip-adapter",
    }
    guides = [Guide("a" * 64), Guide("b" * 64)]
    specs = build_controls({"cn": "blend=#1:0.5, blend=#2"}, shipped, shipped.get("model", "sdxl"), 30, guides)
    assert [(spec.model, spec.weight) for spec in specs] == [("ip-adapter-sdxl", 0.5), ("ip-adapter-sdxl", 1.0)]
    plain = Catalog.from_toml('[model.plain]\narchitecture = "sdxl"\nlocal = "org/plain"\n')
    with pytest.raises(InvalidOption) as refused:
        build_controls({"cn": "blend=#1"}, plain, plain.get("model", "plain"), 30, guides[:1])
    assert refused.value.reason == "'blend' needs an IP-Adapter, and the model 'plain' names none to blend with"
    # A style reference is the same IP-Adapter on the style layers (even where a catalog entry is named blend).
    styled = build_controls({"sref": "#1 #2:0.4", "sw": "60"}, shipped, shipped.get("model", "sdxl"), 30, guides)
    assert [(spec.model, spec.weight, spec.style) for spec in styled] == [
        ("ip-adapter-sdxl", 0.6, True),
        ("ip-adapter-sdxl", 0.4, True),
    ]
    with pytest.raises(InvalidOption) as refused:
        build_controls({"sref": "#1"}, plain, plain.get("model", "plain"), 30, guides[:1])
    assert refused.value.reason == "needs an IP-Adapter, and the model 'plain' names none to take a style with"
    with pytest.raises(ValueError, match="blend names 'canny', which is not an IP-Adapter"):
        Catalog.from_toml(
            '[model.m]\narchitecture = "sdxl"\nblend = "canny"\n'
            '[controlnet.canny]\narchitecture = "sdxl"\nlocal = "org/canny"\npreprocess = "canny"\n'
        )
