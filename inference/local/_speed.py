"""The worker's speed levers: how loaded pipelines are set up for a GPU (or a small one).

One home for every switch that trades start time, memory or exactness for
speed, so the worker, the Ray replicas and `bench/gpu_sdxl.py` set pipelines up
the same way. Each lever is a setting (`bot.config.LocalWorkerSettings`); what
each does to the image is stated on it.

Image-exact up to float rounding (within the batching tolerance, 1/255 per channel):
``channels_last``, ``fuse_qkv``, ``compile``. Memory for speed: ``offload``,
``vae_tiling`` (tiling can leave faint seams; diffusers blends the tiles).

This module imports torch; only the worker process (and tests, benchmarks) import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = ["Compile", "Levers", "Offload", "apply", "compile_cache", "set_fused"]

Compile = Literal["off", "unet", "all"]
Offload = Literal["none", "model", "sequential"]


@dataclass(frozen=True)
class Levers:
    """How pipelines are set up after loading.

    Attributes:
        channels_last: UNets and ControlNets in channels-last memory format (CUDA only: faster
            convolutions on tensor cores; a no-op for the values).
        fuse_qkv: one matrix product for each attention's query, key and value (diffusers'
            ``fuse_qkv_projections``). Undone while LoRAs are active: a fused projection would
            bypass them.
        compile: ``torch.compile`` of the UNets (``unet``), and of the VAE decoder too (``all``).
            The first job of each new shape (size, batch) compiles for a minute or more; the
            compiled code is kept under the data dir (`compile_cache`), so a restart reuses it.
        compile_mode: torch.compile's mode (``default``, ``max-autotune-no-cudagraphs``…).
        offload: ``model`` keeps only the running model on the GPU (diffusers' model CPU
            offload: SDXL base + refiner on an 8–12 GB card, a little slower); ``sequential``
            streams each layer in (runs on ~4 GB, many times slower). CUDA only.
        vae_tiling: decode large images tile by tile, bounding the VAE's memory.
    """

    channels_last: bool = True
    fuse_qkv: bool = False
    compile: Compile = "off"
    compile_mode: str = "default"
    offload: Offload = "none"
    vae_tiling: bool = False

    def describe(self) -> str:
        """Return the levers in one line, for logs and the benchmark's table."""
        parts = [
            "channels-last" if self.channels_last else None,
            "fused-qkv" if self.fuse_qkv else None,
            None if self.compile == "off" else f"compile={self.compile}({self.compile_mode})",
            None if self.offload == "none" else f"offload={self.offload}",
            "vae-tiling" if self.vae_tiling else None,
        ]
        return ", ".join(part for part in parts if part) or "eager"


def compile_cache(data_dir: Path) -> None:
    """Point inductor's and Triton's caches under `data_dir`, so a restart does not recompile.

    Both read their folders from the environment when they first compile, so this is
    called before any compilation. A folder an operator set already is kept.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    root = Path(data_dir) / "cache" / "compile"
    # Importing diffusers has inductor write its default folder (/tmp/torchinductor_<user>) into
    # the environment: that is no operator's choice, and a container loses /tmp at each restart.
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, "", default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    # Compiled graphs (and their autotuning results) are reused across processes.
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def apply(pipe: Any, levers: Levers, device: torch.device) -> None:
    """Put a freshly loaded pipeline on `device` with `levers` applied.

    Called once per loaded pipeline (base, refiner); modules shared between them
    (the second text encoder, the VAE) are set up again, which is harmless.
    """
    cuda = device.type == "cuda"
    if cuda and levers.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif cuda and levers.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if cuda and levers.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if levers.fuse_qkv:
        set_fused(pipe, True)
    if levers.vae_tiling:
        pipe.vae.enable_tiling()
    if levers.compile != "off":
        # In place (nn.Module.compile): the pipeline keeps its own module objects, so from_pipe,
        # LoRA loading and ControlNet pipelines see the same UNet they would see eagerly.
        pipe.unet.compile(mode=levers.compile_mode)
        if levers.compile == "all":
            pipe.vae.decoder.compile(mode=levers.compile_mode)


def set_fused(pipe: Any, fused: bool) -> None:
    """Fuse (or unfuse) the attention projections of a pipeline's UNet, if not so already."""
    unet = pipe.unet
    if getattr(unet, "imagebot_fused", False) == fused:
        return
    if fused:
        unet.fuse_qkv_projections()
    else:
        unet.unfuse_qkv_projections()
    unet.imagebot_fused = fused
