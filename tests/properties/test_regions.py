"""Vary (Region)'s selection as a browser may send it, forged or not: parts inside the image, or one sentence."""

from __future__ import annotations

import io
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.errors import InvalidOption
from bot.regions import MAX_CORNERS, MAX_PARTS, MIN_SHARE, Part, format_parts, grown_by, parse_parts, region_mask
from tests.conftest import FUZZ_EXAMPLES
from tests.properties.sentences import FUZZ, assert_sentence
from tests.properties.strategies import texts

sizes = st.tuples(st.integers(64, 384), st.integers(64, 384))
corner_words = st.one_of(
    st.tuples(st.integers(0, 500), st.integers(0, 500)).map(lambda c: f"{c[0]},{c[1]}"),
    texts,
)
parts_texts = st.one_of(
    # What the editor writes, with corners past the image now and then.
    st.lists(st.lists(corner_words, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=24).map(";".join),
    # Anything at all, and many parts or corners.
    texts,
    st.integers(0, 3000).map(lambda n: " ".join(["1,1", "9,1", "9,9"] * n)),
    st.integers(0, 40).map(lambda n: ";".join(["0,0 50,0 50,50"] * n)),
)


@FUZZ
@given(text=parts_texts, size=sizes)
def test_any_selection_is_parts_inside_the_image_or_one_sentence(text: str, size: tuple[int, int]) -> None:
    width, height = size
    try:
        parts = parse_parts(text, width, height)
    except InvalidOption as error:
        assert_sentence(error)
        return
    assert 1 <= len(parts) <= MAX_PARTS and sum(len(part.corners) for part in parts) <= MAX_CORNERS
    for part in parts:
        assert len(set(part.corners)) >= 3
        assert all(0 <= x <= width and 0 <= y <= height for x, y in part.corners)
    assert parse_parts(format_parts(parts), width, height) == parts


boxes = st.tuples(st.integers(0, 256), st.integers(0, 256), st.integers(1, 256), st.integers(1, 256))


@settings(max_examples=min(300, FUZZ_EXAMPLES), deadline=None)  # each draws a mask
@given(size=sizes, box=boxes)
def test_a_box_repaints_itself_and_its_reach_and_keeps_the_rest(size: tuple[int, int], box: tuple[int, ...]) -> None:
    """Every pixel of a box selected is white; so is every pixel within the mask's reach of it; none farther is."""
    width, height = size
    left, top = min(box[0], width - 1), min(box[1], height - 1)
    right, bottom = min(left + box[2], width), min(top + box[3], height)
    part = Part(((left, top), (right, top), (right, bottom), (left, bottom)))
    try:
        data = region_mask(parse_parts(format_parts([part]), width, height), width, height)
    except InvalidOption as error:
        assert str(error) == f"The selection is too small: select at least {MIN_SHARE:.0%} of the image."
        assert (right - left) * (bottom - top) < MIN_SHARE * width * height  # a filled box covers its inside
        return
    assert (right - left + 1) * (bottom - top + 1) >= MIN_SHARE * width * height  # and at most its edges too
    mask = Image.open(io.BytesIO(data))
    assert (mask.mode, mask.size) == ("L", (width, height))
    reach = grown_by(width, height)
    pixels = mask.load()
    assert pixels is not None
    for y in range(0, height, 3):
        for x in range(0, width, 3):
            dx, dy = max(left - x, 0, x - right), max(top - y, 0, y - bottom)
            distance = math.hypot(dx, dy)
            if distance <= reach - 1:
                assert pixels[x, y] == 255, (x, y, distance)
            elif distance > reach + 1.5:
                assert pixels[x, y] == 0, (x, y, distance)
