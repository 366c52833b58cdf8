"""Annotators: the networks that make a ControlNet's guide map from a user's image (depth, openpose).

A catalog ``annotator`` names the `preprocess` it makes and a folder of its weights in
transformers' format (`bot.catalog`). The bot process decides which one serves a
preprocessing (`find_annotator`, no torch): the first whose files are on this machine, an
operator's own before the tiny random-weight one, which counts only once the tiny model is
built. The worker process loads it once (`Annotators`) and runs it.

A depth map:

1. the image goes through the annotator's own image processor (Depth Anything's: aspect
   kept, sides multiples of 14) and the network;
2. the prediction is resized to the requested size (bicubic, as transformers'
   ``post_process_depth_estimation`` does);
3. it is scaled to 0–255, near bright: the relative depth these networks predict is already
   larger for nearer points (disparity), as the depth maps SDXL depth ControlNets were
   trained on; a metric one (larger is farther) is turned around;
4. it is saved as a PNG whose three channels are the same grey, like the canny maps.

An openpose map (a ViTPose folder, `VitPoseForPoseEstimation`, top-down: it poses one person
per box):

1. the people: with an RT-DETR detector in the folder's ``detector/`` subfolder, each box it
   labels "person" with a score of at least 0.3 (`person_boxes`); without one, the whole
   image is one box, so only one person is posed — several people need the detector;
2. each box, padded by a quarter and widened to the network's aspect, is cut out at the
   network's input size (`crop_region`; OpenCV's affine warp, as ViTPose's own pipeline
   does: transformers' processor would do it with SciPy, which imagebot does not depend on)
   and goes through the processor's normalisation and the network;
3. each heatmap's peak, a quarter pixel towards its higher neighbour, is the keypoint and
   its height the score (`keypoints_from_heatmaps`), back in image coordinates, then scaled
   to the requested size;
4. the 17 COCO keypoints become OpenPose's 18 (a neck between the shoulders) and are drawn as
   A1111's ControlNet draws a body: coloured limbs and joints on black (`draw_body_pose`),
   leaving out joints scored under 0.3 and their limbs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.catalog import Catalog, CatalogEntry
from bot.errors import InvalidOption
from bot.request import Preprocess
from inference.local._folders import first_present

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ANNOTATED",
    "Annotators",
    "annotator_folder",
    "crop_region",
    "draw_body_pose",
    "find_annotator",
    "keypoints_from_heatmaps",
    "person_boxes",
    "preprocessors",
]

# The preprocessings an annotator of ours can make: those transformers has a depth-estimation or
# a pose-estimation (ViTPose) model for.
ANNOTATED: frozenset[Preprocess] = frozenset({"depth", "openpose"})

# A detected person, and a drawn joint, count from this score up (controlnet_aux's and A1111's threshold).
MIN_SCORE = 0.3
# OpenPose's 18 body keypoints, each as the COCO keypoint it is (None: the neck, made from both shoulders).
# OpenPose: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee,
# r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear.
COCO_OF_OPENPOSE: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_L_SHOULDER, _R_SHOULDER = 5, 6
# The OpenPose renderer's limbs (pairs of OpenPose keypoints) and its colours (RGB), keypoint i and limb i
# drawn in colour i, as lllyasviel's ControlNet and A1111's sd-webui-controlnet draw a body.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
_STICK_WIDTH = 4
_JOINT_RADIUS = 4
_LIMB_SHADE = 0.6


def find_annotator(catalog: Catalog, data_dir: Path, preprocess: str) -> tuple[CatalogEntry, Path] | None:
    """Return the catalog annotator that makes `preprocess` here and its folder; None when none is present.

    An operator's annotator wins over a tiny one; among the rest, the first by name.
    """
    if preprocess not in ANNOTATED:
        return None
    return first_present((entry for entry in catalog.entries("annotator") if entry.preprocess == preprocess), data_dir)


def annotator_folder(catalog: Catalog, data_dir: Path, preprocess: str) -> Path:
    """Return the folder of the annotator that makes `preprocess` here (the worker's and the replicas' lookup).

    Raises:
        InvalidOption: no catalog annotator for it has its files in place.
    """
    found = find_annotator(catalog, data_dir, preprocess)
    if found is None:
        raise InvalidOption("preprocess", f"'{preprocess}' needs a catalog annotator whose files are in place")
    return found[1]


def preprocessors(catalog: Catalog, data_dir: Path) -> frozenset[Preprocess]:
    """Return the preprocessings whose annotator's files are on this machine now."""
    return frozenset(
        preprocess for preprocess in ANNOTATED if find_annotator(catalog, data_dir, preprocess) is not None
    )


def person_boxes(detections: Iterable[tuple[str, float, Sequence[float]]]) -> list[list[float]]:
    """Return the people among a detector's finds as COCO boxes (x, y, width, height), best first.

    Args:
        detections: each find's label, score and box (x0, y0, x1, y1, in image pixels).
    """
    people = [
        (score, [x0, y0, x1 - x0, y1 - y0])
        for label, score, (x0, y0, x1, y1) in detections
        if label == "person" and score >= MIN_SCORE and x1 > x0 and y1 > y0
    ]
    people.sort(key=lambda found: -found[0])
    return [box for _, box in people]


def crop_region(box: Sequence[float], aspect: float) -> tuple[float, float, float, float]:
    """Return the region a pose network sees of a COCO box: padded by 1.25, widened to `aspect` (width / height).

    ViTPose's (mmpose's top-down) framing, as transformers' ``box_to_center_and_scale`` computes it.

    Returns:
        Its left, top, width and height in image pixels.
    """
    x, y, width, height = (float(value) for value in box[:4])
    center_x, center_y = x + width / 2, y + height / 2
    if width > aspect * height:
        height = width / aspect
    elif width < aspect * height:
        width = height * aspect
    width, height = width * 1.25, height * 1.25
    return center_x - width / 2, center_y - height / 2, width, height


def keypoints_from_heatmaps(
    heatmaps: np.ndarray, regions: Sequence[tuple[float, float, float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Return each person's keypoints in image pixels and their scores from a pose network's heatmaps.

    A keypoint is its heatmap's peak moved a quarter pixel towards the higher neighbour on each
    axis (the classic top-down decoding), mapped back through the crop as it was cut (`crop_region`,
    corners on corners); its score is the peak's height.

    Args:
        heatmaps: (people, keypoints, height, width).
        regions: each person's crop region (left, top, width, height).

    Returns:
        Keypoints (people, keypoints, 2) as x, y and scores (people, keypoints).
    """
    import numpy as np

    people, joints, rows, columns = heatmaps.shape
    flat = heatmaps.reshape(people, joints, -1)
    peaks = flat.argmax(axis=2)
    scores = flat.max(axis=2).astype(np.float64)
    xs = (peaks % columns).astype(np.float64)
    ys = (peaks // columns).astype(np.float64)
    for person in range(people):
        for joint in range(joints):
            heatmap = heatmaps[person, joint]
            column, row = int(xs[person, joint]), int(ys[person, joint])
            if 0 < column < columns - 1:
                xs[person, joint] += 0.25 * np.sign(heatmap[row, column + 1] - heatmap[row, column - 1])
            if 0 < row < rows - 1:
                ys[person, joint] += 0.25 * np.sign(heatmap[row + 1, column] - heatmap[row - 1, column])
    keypoints = np.zeros((people, joints, 2))
    for person, (left, top, width, height) in enumerate(regions):
        keypoints[person, :, 0] = left + xs[person] * width / max(columns - 1, 1)
        keypoints[person, :, 1] = top + ys[person] * height / max(rows - 1, 1)
    return keypoints, scores


def draw_body_pose(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """Draw people's COCO keypoints as an OpenPose body map: `height`×`width`×3 RGB, black where nothing is.

    Each person's 17 COCO keypoints become OpenPose's 18 (the neck at the middle of both shoulders,
    only when both are there); a keypoint scored under 0.3 is left out, and every limb to it.
    Limbs are filled ellipses 4 pixels thick in 0.6 of their colour, joints filled circles of
    radius 4 in their full colour on top, as A1111's ControlNet extension draws them.

    Args:
        keypoints: (people, 17, 2) x, y in the map's pixels.
        scores: (people, 17).
        width: the map's width.
        height: the map's height.
    """
    import cv2
    import numpy as np

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    # Far off the map a keypoint still aims its limb; held within a few map sizes, cv2 gets sane integers.
    reach = 4 * max(width, height)
    for person_keypoints, person_scores in zip(keypoints, scores, strict=True):
        coco: list[tuple[float, float] | None] = [
            (float(np.clip(x, -reach, reach)), float(np.clip(y, -reach, reach)))
            if score >= MIN_SCORE and math.isfinite(x) and math.isfinite(y)
            else None
            for (x, y), score in zip(person_keypoints, person_scores, strict=True)
        ]
        left, right = coco[_L_SHOULDER], coco[_R_SHOULDER]
        neck = None if left is None or right is None else ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
        body = [neck if index is None else coco[index] for index in COCO_OF_OPENPOSE]
        for (start, end), color in zip(LIMBS, COLORS, strict=False):
            one, two = body[start], body[end]
            if one is None or two is None:
                continue
            middle = (int((one[0] + two[0]) / 2), int((one[1] + two[1]) / 2))
            length = math.hypot(one[0] - two[0], one[1] - two[1])
            angle = math.degrees(math.atan2(one[1] - two[1], one[0] - two[0]))
            polygon = cv2.ellipse2Poly(middle, (int(length / 2), _STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(channel * _LIMB_SHADE) for channel in color])
        for point, color in zip(body, COLORS, strict=True):
            if point is not None:
                cv2.circle(canvas, (int(point[0]), int(point[1])), _JOINT_RADIUS, color, thickness=-1)
    return canvas


class Annotators:
    """The annotators the worker has loaded, by folder; each is loaded once (imports torch).

    Args:
        device: the torch device they run on (the worker's).
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        # folder -> (network, image processor, person detector and its processor or None)
        self._loaded: dict[str, tuple[Any, Any, tuple[Any, Any] | None]] = {}
        self.loads = 0

    def make(self, folder: Path, preprocess: str, image: bytes, width: int, height: int) -> bytes:
        """Return the `preprocess` map of `image` (PNG bytes) at `width`×`height`, as PNG bytes."""
        from PIL import Image

        if preprocess not in ANNOTATED:
            raise ValueError(f"no annotator of ours makes {preprocess!r} maps")
        with Image.open(io.BytesIO(image)) as opened:
            rgb = opened.convert("RGB")
        made = (
            self._depth(folder, rgb, width, height) if preprocess == "depth" else self._pose(folder, rgb, width, height)
        )
        buffer = io.BytesIO()
        Image.fromarray(made).save(buffer, format="PNG")
        return buffer.getvalue()

    def _depth(self, folder: Path, rgb: Any, width: int, height: int) -> np.ndarray:
        """Return the depth map of `rgb` at `width`×`height`: one grey in three channels, near bright."""
        import numpy as np
        import torch

        model, processor, _ = self._load(folder, "depth")
        # 1. the annotator's own preprocessing and network
        inputs = processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            predicted = model(**inputs).predicted_depth
        # 2. at the requested size
        depth = torch.nn.functional.interpolate(
            predicted.float().unsqueeze(1), size=(height, width), mode="bicubic", align_corners=False
        )[0, 0]
        # 3. 0–255, near bright
        if getattr(model.config, "depth_estimation_type", "relative") == "metric":
            depth = -depth
        low, high = depth.min(), depth.max()
        scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        gray = (scaled * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        # 4. one grey in three channels
        return np.stack([gray] * 3, axis=-1)

    def _pose(self, folder: Path, rgb: Any, width: int, height: int) -> np.ndarray:
        """Return the OpenPose body map of the people in `rgb` at `width`×`height`."""
        import cv2
        import numpy as np
        import torch

        model, processor, detector = self._load(folder, "openpose")
        # 1. the people: the detector's, or the whole image as one
        boxes = (
            self._people(detector, rgb) if detector is not None else [[0.0, 0.0, float(rgb.width), float(rgb.height)]]
        )
        if not boxes:
            return draw_body_pose(np.zeros((0, 17, 2)), np.zeros((0, 17)), width, height)
        # 2. each person's crop at the network's input size, its normalisation and the network
        crop_height, crop_width = int(processor.size["height"]), int(processor.size["width"])
        regions = [crop_region(box, crop_width / crop_height) for box in boxes]
        pixels = np.asarray(rgb)
        crops = []
        for left, top, region_width, region_height in regions:
            scale_x, scale_y = (crop_width - 1) / region_width, (crop_height - 1) / region_height
            warp = np.array([[scale_x, 0.0, -left * scale_x], [0.0, scale_y, -top * scale_y]])
            crops.append(cv2.warpAffine(pixels, warp, (crop_width, crop_height), flags=cv2.INTER_LINEAR))
        inputs = processor(images=crops, boxes=None, do_affine_transform=False, return_tensors="pt").to(self.device)
        extra = {}
        if getattr(model.config.backbone_config, "num_experts", 1) > 1:
            # ViTPose+ (a mixture of experts): the COCO body expert is the first.
            extra["dataset_index"] = torch.zeros(len(crops), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            heatmaps = model(**inputs, **extra).heatmaps.float().cpu().numpy()
        # 3. keypoints in the image, then in the map
        keypoints, scores = keypoints_from_heatmaps(heatmaps[:, :17], regions)
        keypoints *= np.array([width / rgb.width, height / rgb.height])
        # 4. OpenPose's body drawing
        return draw_body_pose(keypoints, scores, width, height)

    def _people(self, detector: tuple[Any, Any], rgb: Any) -> list[list[float]]:
        """Return the boxes of the people the detector finds in `rgb` (COCO format, image pixels)."""
        import torch

        network, processor = detector
        inputs = processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = network(**inputs)
        (found,) = processor.post_process_object_detection(
            outputs, target_sizes=[(rgb.height, rgb.width)], threshold=0.0
        )
        labels = network.config.id2label
        return person_boxes(
            (labels[int(label)], float(score), [float(value) for value in box])
            for label, score, box in zip(found["labels"], found["scores"], found["boxes"], strict=True)
        )

    def _load(self, folder: Path, preprocess: str) -> tuple[Any, Any, tuple[Any, Any] | None]:
        """Return an annotator's network, image processor and person detector, loaded once, never downloaded."""
        key = str(folder)
        if key not in self._loaded:
            import torch
            from transformers import (
                AutoImageProcessor,
                AutoModelForDepthEstimation,
                AutoModelForObjectDetection,
                VitPoseForPoseEstimation,
            )

            # float32 whatever the worker's dtype: small networks, once per guide.
            options: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32}
            detector = None
            if preprocess == "depth":
                model = AutoModelForDepthEstimation.from_pretrained(folder, **options)
            else:
                model = VitPoseForPoseEstimation.from_pretrained(folder, **options)
                if (folder / "detector" / "config.json").is_file():
                    network = AutoModelForObjectDetection.from_pretrained(folder / "detector", **options)
                    detector = (
                        network.to(self.device).eval(),
                        AutoImageProcessor.from_pretrained(folder / "detector", local_files_only=True),
                    )
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            self._loaded[key] = (model.to(self.device).eval(), processor, detector)
            self.loads += 1
        return self._loaded[key]
