"""The OpenPose body map, drawn from keypoints, and the boxes and keypoints a pose network's output gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.local._annotators import (
    COCO_OF_OPENPOSE,
    COLORS,
    LIMBS,
    crop_region,
    draw_body_pose,
    keypoints_from_heatmaps,
    person_boxes,
)

pytest.importorskip("cv2")

# A standing person, COCO order, far enough apart that no joint's circle touches another's.
STANDING = np.array(
    [
        (100, 30),  # nose
        (110, 20),  # l-eye
        (90, 20),  # r-eye
        (125, 25),  # l-ear
        (75, 25),  # r-ear
        (140, 70),  # l-shoulder
        (60, 70),  # r-shoulder
        (160, 120),  # l-elbow
        (40, 120),  # r-elbow
        (170, 170),  # l-wrist
        (30, 170),  # r-wrist
        (130, 170),  # l-hip
        (70, 170),  # r-hip
        (135, 230),  # l-knee
        (65, 230),  # r-knee
        (140, 290),  # l-ankle
        (60, 290),  # r-ankle
    ],
    dtype=np.float64,
)
WIDTH, HEIGHT = 200, 320
NECK = (100, 70)


def draw(scores: np.ndarray | None = None, keypoints: np.ndarray = STANDING) -> np.ndarray:
    return draw_body_pose(keypoints[None], np.ones((1, 17)) if scores is None else scores[None], WIDTH, HEIGHT)


def openpose_point(index: int) -> tuple[int, int]:
    coco = COCO_OF_OPENPOSE[index]
    x, y = NECK if coco is None else STANDING[coco]
    return int(x), int(y)


def color_at(canvas: np.ndarray, point: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(channel) for channel in canvas[point[1], point[0]])


def test_the_map_is_the_size_asked_and_black_where_nothing_is_drawn():
    """height×width×3 bytes; the corners, far from the body, are black."""
    canvas = draw()
    assert canvas.shape == (HEIGHT, WIDTH, 3) and canvas.dtype == np.uint8
    for corner in ((0, 0), (WIDTH - 1, 0), (0, HEIGHT - 1), (WIDTH - 1, HEIGHT - 1)):
        assert color_at(canvas, corner) == (0, 0, 0)
    assert (canvas.sum(axis=-1) == 0).mean() > 0.7


def test_each_keypoint_has_its_openpose_colour_and_each_limb_its_shade():
    """Joint i is OpenPose's colour i at its centre; limb i is 0.6 of colour i at its middle."""
    canvas = draw()
    for index, color in enumerate(COLORS):
        assert color_at(canvas, openpose_point(index)) == color, index
    for index, (start, end) in enumerate(LIMBS):
        (x1, y1), (x2, y2) = openpose_point(start), openpose_point(end)
        middle = (int((x1 + x2) / 2), int((y1 + y2) / 2))
        if index in (12, 13, 15):  # nose-neck, nose-eyes: short limbs, their middles under a joint's circle
            continue
        assert color_at(canvas, middle) == tuple(int(channel * 0.6) for channel in COLORS[index]), index


def test_a_keypoint_under_the_threshold_draws_nothing_nor_its_limbs():
    """The left wrist at 0.29: no circle, no forearm; at 0.3 both are there."""
    scores = np.ones(17)
    scores[9] = 0.29
    canvas = draw(scores)
    wrist, elbow = openpose_point(7), openpose_point(6)
    forearm = ((wrist[0] + elbow[0]) // 2, (wrist[1] + elbow[1]) // 2)
    assert color_at(canvas, wrist) == (0, 0, 0) and color_at(canvas, forearm) == (0, 0, 0)
    scores[9] = 0.3
    canvas = draw(scores)
    assert color_at(canvas, wrist) == COLORS[7] and color_at(canvas, forearm) != (0, 0, 0)


def test_the_neck_is_between_both_shoulders_and_absent_without_one():
    """Neck: OpenPose's colour 1 at the shoulders' middle; with the right shoulder left out, nothing there."""
    assert color_at(draw(), NECK) == COLORS[1]
    scores = np.ones(17)
    scores[6] = 0.0
    canvas = draw(scores)
    assert color_at(canvas, NECK) == (0, 0, 0)
    assert color_at(canvas, openpose_point(2)) == (0, 0, 0)  # the right shoulder itself
    assert color_at(canvas, openpose_point(5)) == COLORS[5]  # the left one stays


def test_no_people_is_a_black_map():
    """Nobody found: all black, still the size asked."""
    canvas = draw_body_pose(np.zeros((0, 17, 2)), np.zeros((0, 17)), 64, 48)
    assert canvas.shape == (48, 64, 3) and not canvas.any()


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 96),
    height=st.integers(1, 96),
    people=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1.0, 3.0, 1e6]),
)
def test_any_keypoints_give_a_map_of_the_size_with_palette_colours_at_the_joints(width, height, people, seed, spread):
    """Random keypoints (some far off the map) and scores: the size asked, the last person's joints in the palette.

    People are drawn one after the other, as A1111 draws them: a later one's limbs may cover an earlier one's joints.
    """
    rng = np.random.default_rng(seed)
    keypoints = (rng.random((people, 17, 2)) * 2 - 0.5) * spread * np.array([width, height])
    scores = rng.random((people, 17))
    canvas = draw_body_pose(keypoints, scores, width, height)
    assert canvas.shape == (height, width, 3) and canvas.dtype == np.uint8
    palette = {(0, 0, 0), *COLORS}
    for person_keypoints, person_scores in zip(keypoints[-1:], scores[-1:], strict=True):
        for (x, y), score in zip(person_keypoints, person_scores, strict=True):
            if score >= 0.3 and 0 <= int(x) < width and 0 <= int(y) < height:
                assert tuple(int(channel) for channel in canvas[int(y), int(x)]) in palette


def test_only_people_scored_enough_are_boxes_best_first():
    """Label "person" at 0.3 or more, in COCO format (x, y, width, height); others and empty boxes dropped."""
    detections = [
        ("person", 0.5, (10.0, 20.0, 50.0, 100.0)),
        ("cat", 0.9, (0.0, 0.0, 10.0, 10.0)),
        ("person", 0.29, (0.0, 0.0, 30.0, 30.0)),
        ("person", 0.3, (60.0, 5.0, 90.0, 65.0)),
        ("person", 0.95, (1.0, 2.0, 3.0, 4.0)),
        ("person", 0.8, (5.0, 5.0, 5.0, 40.0)),
    ]
    assert person_boxes(detections) == [[1.0, 2.0, 2.0, 2.0], [10.0, 20.0, 40.0, 80.0], [60.0, 5.0, 30.0, 60.0]]
    assert person_boxes([]) == []


def test_a_box_is_padded_by_a_quarter_and_widened_to_the_networks_aspect():
    """A 40×80 box for a 3:4 network: 60 wide (the aspect), then both sides × 1.25, around the same centre."""
    left, top, width, height = crop_region([10, 20, 40, 80], 0.75)
    assert (width, height) == (75.0, 100.0)
    assert (left + width / 2, top + height / 2) == (30.0, 60.0)


def test_a_heatmap_peak_is_the_keypoint_back_in_the_image():
    """Peak at column 2, row 1 of a 5×3 map, higher on the right: x a quarter further; corners map to corners."""
    heatmaps = np.zeros((1, 2, 3, 5))
    heatmaps[0, 0, 1, 2] = 0.9
    heatmaps[0, 0, 1, 3] = 0.5
    heatmaps[0, 1, 2, 4] = 0.4  # the bottom-right corner
    keypoints, scores = keypoints_from_heatmaps(heatmaps, [(100.0, 50.0, 40.0, 20.0)])
    assert scores.tolist() == [[0.9, 0.4]]
    assert keypoints[0, 0].tolist() == [100.0 + 2.25 * 10.0, 50.0 + 1 * 10.0]
    assert keypoints[0, 1].tolist() == [140.0, 70.0]
