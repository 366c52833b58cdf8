"""ESRGAN-family upscalers: Real-ESRGAN's two networks, loaded from their own weight files.

A catalog ``upscaler`` names a ``.safetensors`` (or ``.pth``) file of one of the two
networks people use with SDXL bots:

- **SRVGGNetCompact** (``realesr-general-x4v3``, ``realesr-animevideov3``): a plain stack of
  3×3 convolutions with PReLUs (``body.0`` … ``body.N``), a pixel shuffle, and the input's
  nearest-neighbour enlargement added back.
- **RRDBNet** (``RealESRGAN_x4plus``, ``RealESRGAN_x2plus``, 4x-UltraSharp and the other ESRGAN
  fine-tunes): ``conv_first``, residual-in-residual dense blocks (``body.N.rdb1.conv1`` …),
  ``conv_body``, two nearest-neighbour ×2 steps (``conv_up1``, ``conv_up2``), ``conv_hr`` and
  ``conv_last``. The ×2 and ×1 variants pixel-unshuffle their input first, so ``conv_first``
  takes 12 or 48 channels. Files in the original ESRGAN layout (``model.0``,
  ``model.1.sub.N.RDB1.conv1.0`` …) are renamed to this one.

The modules here are our own, written to the layouts of the published weights (the same
parameter names and shapes as Real-ESRGAN's ``basicsr`` modules), so those files load with a
strict ``load_state_dict``. spandrel, the library made for this, imports torchvision, which
this project's CPU torch cannot load. `detect` reads the architecture, scale, feature width and
depth from the weights' names and shapes alone and refuses anything else with `UnknownUpscaler`,
whose text is one sentence; `upscale` runs a network over an image in tiles, so memory stays
bounded whatever the image's size.

This module imports torch; only the worker process (and tests) import it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

__all__ = [
    "Architecture",
    "RRDBNet",
    "SRVGGNetCompact",
    "UnknownUpscaler",
    "build",
    "detect",
    "load_upscaler",
    "read_weights",
    "upscale",
]

# The largest network `detect` accepts: beyond these no published model goes, and a file claiming
# more is not one of them (and would take minutes to build).
MAX_FEATURES = 512
MAX_BLOCKS = 64
MAX_GROWTH = 256
# Input channels of RRDBNet's conv_first (3 colour channels, pixel-unshuffled by 2 or 4) → its scale.
_RRDB_SCALES = {3: 4, 12: 2, 48: 1}
_V = TypeVar("_V")
_TILE = 256  # input pixels per tile side
_TILE_PAD = 32  # input pixels of context around a tile (a multiple of 4), cropped from its output


class UnknownUpscaler(ValueError):
    """Weights that are not a network `detect` knows; the text ends a sentence about the file."""


# The networks


class SRVGGNetCompact(nn.Module):  # type: ignore[misc]  # torch is not type-checked here
    """Real-ESRGAN's compact network: convolutions and PReLUs, a pixel shuffle, plus the input enlarged."""

    def __init__(self, channels: int = 3, features: int = 64, convs: int = 16, scale: int = 4) -> None:
        """Build the layers; ``body`` holds conv, PReLU, `convs` × (conv, PReLU), conv."""
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, 1, 1), nn.PReLU(num_parameters=features)]
        for _ in range(convs):
            layers += [nn.Conv2d(features, features, 3, 1, 1), nn.PReLU(num_parameters=features)]
        layers.append(nn.Conv2d(features, channels * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return `x` (N, C, H, W in 0–1) `scale` times larger."""
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class _DenseBlock(nn.Module):  # type: ignore[misc]  # torch is not type-checked here
    """Five convolutions, each seeing the block's input and every earlier output; residual scaled by 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, growth, 3, 1, 1)
        self.conv2 = nn.Conv2d(features + growth, growth, 3, 1, 1)
        self.conv3 = nn.Conv2d(features + 2 * growth, growth, 3, 1, 1)
        self.conv4 = nn.Conv2d(features + 3 * growth, growth, 3, 1, 1)
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(self.lrelu(conv(torch.cat(seen, 1))))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class _RRDB(nn.Module):  # type: ignore[misc]  # torch is not type-checked here
    """Three dense blocks in a row, with their own residual scaled by 0.2."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = _DenseBlock(features, growth)
        self.rdb2 = _DenseBlock(features, growth)
        self.rdb3 = _DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):  # type: ignore[misc]  # torch is not type-checked here
    """ESRGAN's generator as Real-ESRGAN ships it: ×4, or ×2 and ×1 on a pixel-unshuffled input."""

    def __init__(
        self,
        channels: int = 3,
        out_channels: int = 3,
        scale: int = 4,
        features: int = 64,
        blocks: int = 23,
        growth: int = 32,
    ) -> None:
        """Build the layers; `scale` 2 or 1 unshuffles the input by 2 or 4 first."""
        super().__init__()
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(channels * self.unshuffle**2, features, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(features, growth) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return `x` (N, C, H, W in 0–1; H and W multiples of the unshuffle) `scale` times larger."""
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


# Reading weights


@dataclass(frozen=True, slots=True)
class Architecture:
    """Which network a set of weights is, and its sizes."""

    kind: Literal["compact", "rrdb"]
    scale: int
    features: int
    depth: int  # SRVGGNetCompact: hidden convolutions; RRDBNet: RRDB blocks
    growth: int = 0  # RRDBNet only
    channels: int = 3
    out_channels: int = 3

    @property
    def title(self) -> str:
        """Return how a note names it: ``RRDBNet ×4 (64 features, 23 blocks)``."""
        if self.kind == "compact":
            return f"SRVGGNetCompact ×{self.scale} ({self.features} features, {self.depth} convolutions)"
        return f"RRDBNet ×{self.scale} ({self.features} features, {self.depth} blocks)"

    def module(self) -> nn.Module:
        """Return a new network of this architecture (random weights)."""
        if self.kind == "compact":
            return SRVGGNetCompact(self.channels, self.features, self.depth, self.scale)
        return RRDBNet(self.channels, self.out_channels, self.scale, self.features, self.depth, self.growth)


_OLD_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)")
_OLD_BODY_END = re.compile(r"model\.1\.sub\.\d+\.(weight|bias)")
_OLD_TAIL = re.compile(r"model\.(\d+)\.(weight|bias)")


def _renamed(keys: Sequence[str]) -> dict[str, str] | None:
    """Map the original ESRGAN layout's names (``model.0``, ``model.1.sub.0.RDB1.conv1.0`` …) to RRDBNet's.

    Returns None when the names are not in that layout. Only the ×4 layout maps (two upsampling
    convolutions); any other tail is left unmapped and then refused by `detect`.
    """
    if "model.0.weight" not in keys:
        return None
    names: dict[str, str] = {}
    tail: set[int] = set()
    for key in keys:
        if match := _OLD_RDB.fullmatch(key):
            block, rdb, conv, what = match.groups()
            names[key] = f"body.{block}.rdb{rdb}.conv{conv}.{what}"
        elif match := _OLD_BODY_END.fullmatch(key):
            # The shortcut block's last member (after the RRDBs) is conv_body.
            names[key] = f"conv_body.{match[1]}"
        elif match := _OLD_TAIL.fullmatch(key):
            tail.add(int(match[1]))
    convs = sorted(tail)
    if len(convs) == 5 and convs[0] == 0:
        for index, name in zip(convs, ("conv_first", "conv_up1", "conv_up2", "conv_hr", "conv_last"), strict=True):
            for what in ("weight", "bias"):
                names[f"model.{index}.{what}"] = f"{name}.{what}"
    return names


def _in_rrdb_names(weights: Mapping[str, _V]) -> dict[str, _V]:
    """Return `weights` (or their shapes) by RRDBNet's names, renamed if in the original ESRGAN layout."""
    names = _renamed(list(weights)) or {}
    return {names.get(key, key): value for key, value in weights.items()}


def _shape(shapes: Mapping[str, Sequence[int]], key: str, dims: int) -> tuple[int, ...] | None:
    shape = shapes.get(key)
    return tuple(shape) if shape is not None and len(shape) == dims else None


def detect(shapes: Mapping[str, Sequence[int]]) -> Architecture:
    """Return the network that weights of these names and shapes are, from the names and shapes alone.

    Args:
        shapes: each weight's name and shape (RRDBNet's names in either layout, see `_renamed`).

    Raises:
        UnknownUpscaler: not SRVGGNetCompact or RRDBNet of a size `detect` accepts, or a layout
            that does not match the one it looks like in every name and shape.
    """
    shapes = _in_rrdb_names(shapes)
    if "conv_first.weight" in shapes:
        found = _detect_rrdb(shapes)
    elif "body.0.weight" in shapes:
        found = _detect_compact(shapes)
    else:
        raise UnknownUpscaler(
            "is not an ESRGAN-family network this bot can run (it has neither RRDBNet's conv_first nor"
            " SRVGGNetCompact's body.0; these two are the ones it knows)"
        )
    if found.features > MAX_FEATURES or found.depth > MAX_BLOCKS or found.growth > MAX_GROWTH:
        raise UnknownUpscaler(f"looks like a {found.title}, larger than any published one this bot runs")
    sizes = (found.features, found.depth + 1, found.channels, found.out_channels, found.growth or 1)
    if min(sizes) < 1 or found.channels > 4:
        raise UnknownUpscaler(f"looks like a {found.title} with no room for an image in it")
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {key: tuple(value.shape) for key, value in found.module().state_dict().items()}
    given = {key: tuple(shape) for key, shape in shapes.items()}
    if expected != given:
        wrong = sorted(set(expected) ^ set(given)) or sorted(k for k in expected if expected[k] != given[k])
        raise UnknownUpscaler(f"looks like a {found.title} but does not match it (first difference: {wrong[0][:60]})")
    return found


def _detect_compact(shapes: Mapping[str, Sequence[int]]) -> Architecture:
    first = _shape(shapes, "body.0.weight", 4)
    if first is None or "body.1.weight" not in shapes:
        raise UnknownUpscaler("looks like SRVGGNetCompact but is not its PReLU version, the one this bot runs")
    indices = [int(key.split(".")[1]) for key in shapes if re.fullmatch(r"body\.\d+\.weight", key)]
    last = max(indices)
    last_shape = _shape(shapes, f"body.{last}.weight", 4)
    channels = first[1]
    if last % 2 or last < 2 or last_shape is None or channels < 1:
        raise UnknownUpscaler("looks like SRVGGNetCompact but its body does not end in an output convolution")
    scale = math.isqrt(max(last_shape[0] // channels, 0))
    if scale not in (1, 2, 3, 4) or scale * scale * channels != last_shape[0]:
        raise UnknownUpscaler(f"looks like SRVGGNetCompact but its last convolution makes {last_shape[0]} channels")
    return Architecture("compact", scale, features=first[0], depth=(last - 2) // 2, channels=channels)


def _detect_rrdb(shapes: Mapping[str, Sequence[int]]) -> Architecture:
    first = _shape(shapes, "conv_first.weight", 4)
    last = _shape(shapes, "conv_last.weight", 4)
    grow = _shape(shapes, "body.0.rdb1.conv1.weight", 4)
    if first is None or last is None or grow is None or "conv_up1.weight" not in shapes:
        raise UnknownUpscaler(
            "looks like RRDBNet but lacks conv_last, conv_up1 or body.0 (only the ×1, ×2 and ×4 layouts run here)"
        )
    scale = _RRDB_SCALES.get(first[1])
    if scale is None or "conv_up3.weight" in shapes:
        raise UnknownUpscaler(f"looks like RRDBNet but takes {first[1]} input channels (3, 12 or 48 run here)")
    blocks = 1 + max(int(key.split(".")[1]) for key in shapes if re.fullmatch(r"body\.\d+\.rdb1\.conv1\.weight", key))
    return Architecture("rrdb", scale, features=first[0], depth=blocks, growth=grow[0], out_channels=last[0])


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Return the weights in a ``.safetensors`` file, or a ``.pth``/``.pt`` file read with ``weights_only``.

    Real-ESRGAN's ``.pth`` files keep the weights under ``params_ema`` or ``params``; those are unwrapped.

    Raises:
        UnknownUpscaler: another kind of file, or one that holds no tensors by name.
    """
    data: object
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(path)
    elif path.suffix in (".pth", ".pt"):
        # weights_only: a pickle may run code when loaded; this reads tensors and plain containers only.
        data = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("params_ema", "params", "state_dict"):
            if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
                data = data[wrapper]
    else:
        raise UnknownUpscaler(f"is a {path.suffix or 'suffix-less'} file; upscalers load from .safetensors or .pth")
    if not isinstance(data, dict) or not data or not all(isinstance(value, torch.Tensor) for value in data.values()):
        raise UnknownUpscaler("does not hold named weights")
    weights: dict[str, torch.Tensor] = {str(key): value for key, value in data.items()}
    return weights


def build(weights: Mapping[str, torch.Tensor]) -> tuple[nn.Module, Architecture]:
    """Return the network these weights are, loaded with them (strictly), in eval mode, and what it is.

    Raises:
        UnknownUpscaler: `detect` refused them.
    """
    found = detect({key: tuple(value.shape) for key, value in weights.items()})
    module = found.module()
    module.load_state_dict(_in_rrdb_names(weights), strict=True)
    return module.eval().requires_grad_(False), found


def load_upscaler(path: Path) -> tuple[nn.Module, Architecture]:
    """Return the network in a weight file and what it is (`read_weights`, then `build`)."""
    return build(read_weights(path))


# Running


def _tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


def _enlarge(
    net: nn.Module,
    scale: int,
    image: Image.Image,
    device: torch.device,
    dtype: torch.dtype,
    on_tile: Callable[[int, int], None],
    tile: int,
) -> Image.Image:
    """Return `image` through `net` once, `scale` times larger, a tile at a time with context around each."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    # RRDBNet ×2 and ×1 pixel-unshuffle their input: the image is padded (edge pixels repeated) to a
    # multiple of 2 or 4 once, and every tile starts and ends on that grid, so each tile groups the
    # pixels as the whole image would.
    divisor = int(getattr(net, "unshuffle", 1))
    grid = pixels
    if height % divisor or width % divisor:
        padding = (0, -width % divisor, 0, -height % divisor)
        grid = F.pad(pixels.unsqueeze(0), padding, mode="replicate")[0]
    rows, columns = grid.shape[1:]
    tile = max(divisor, tile // divisor * divisor)
    out = np.empty((rows * scale, columns * scale, 3), dtype=np.uint8)
    tiles = list(_tiles(rows, columns, tile))
    for done, (top, left, bottom, right) in enumerate(tiles, start=1):
        y0, x0 = max(top - _TILE_PAD, 0), max(left - _TILE_PAD, 0)
        y1, x1 = min(bottom + _TILE_PAD, rows), min(right + _TILE_PAD, columns)
        with torch.inference_mode():
            result = net(grid[:, y0:y1, x0:x1].unsqueeze(0).to(device, dtype)).float().clamp_(0, 1).cpu()
        cut = result[0, :, (top - y0) * scale : (bottom - y0) * scale, (left - x0) * scale : (right - x0) * scale]
        out[top * scale : bottom * scale, left * scale : right * scale] = (
            (cut.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        )
        on_tile(done, len(tiles))
    out = out[: height * scale, : width * scale]
    return Image.fromarray(np.ascontiguousarray(out))


def upscale(
    net: nn.Module,
    found: Architecture,
    image: Image.Image,
    size: tuple[int, int],
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    on_tile: Callable[[int, int], None] = lambda done, total: None,
    tile: int = _TILE,
) -> Image.Image:
    """Return `image` enlarged to `size` by `net`: as many passes as reach it, then Lanczos to the exact size.

    A ×4 network asked for 2× runs once and is resized down; a ×2 network asked for 4× runs
    twice; a ×1 network (a restorer) runs once and Lanczos enlarges its output. Each pass goes
    a tile of `tile` pixels at a time (with a margin of context cropped off), so memory grows
    with the tile, not the image; the same image gives the same pixels every time.

    Args:
        net: the network (`build`).
        found: what it is (`build`).
        image: the image to enlarge.
        size: the (width, height) wanted.
        device: where the network runs (default: the CPU).
        dtype: the precision it runs in.
        on_tile: called with (tiles done, tiles in this pass) after each tile; it may raise to stop.
        tile: input pixels per tile side.
    """
    device = device or torch.device("cpu")
    net.to(device, dtype)
    image = image.convert("RGB")
    if found.scale == 1:
        image = _enlarge(net, 1, image, device, dtype, on_tile, tile)
    while found.scale > 1 and (image.width < size[0] or image.height < size[1]):
        image = _enlarge(net, found.scale, image, device, dtype, on_tile, tile)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image
