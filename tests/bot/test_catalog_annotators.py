"""Catalog annotators: what makes a guide map locally, and what the catalog refuses to hold."""

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
