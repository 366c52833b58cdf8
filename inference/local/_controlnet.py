"""ControlNets and IP-Adapters in the local worker's denoising loop: exactly on their steps, in their control mode.

diffusers' SDXL ControlNet pipelines call ``self.controlnet(...)`` once per UNet call and add
what it returns to the UNet's skip connections. `GatedControlNets` is what they call: a
`MultiControlNetModel` (so one ControlNet or three go the same way) that counts its calls,
knows which denoising step each call belongs to, and runs each ControlNet only on that
ControlNet's steps, in its control mode.

Why gate per call rather than pass ``control_guidance_start``/``control_guidance_end``?
diffusers turns those fractions into a keep-or-drop flag per *loop index*, over the length of
the schedule before ``denoising_end`` cuts it for the refiner. Heun's loop has two indices per
step (one for the last), so a fraction meant as "steps 1–3" lands on calls, not steps; a
refiner split shortens the loop but not the length the fractions are taken of; and a dropped
ControlNet still runs, at scale zero. A step number per call is exact by construction on
every scheduler, with or without an init image (the loop then starts at the first step that
runs, which is step 1 here), and a ControlNet outside its steps costs nothing.

Control modes (what the README's ControlNet section says):

- ``balanced``: the ControlNet as trained, its residuals times the weight, on both halves of
  classifier-free guidance.
- ``prompt`` ("my prompt is more important"): A1111's soft injection. Residual ``i`` (shallow to
  deep, the middle block's last) is scaled by ``0.825 ** (12 - i)`` as well, A1111's list of 13
  cut to the ControlNet's residuals as A1111 cuts it for SDXL (10: 0.10 up to 0.56), so the
  structure the shallow layers carry is weak and the prompt decides the details.
- ``controlnet`` ("ControlNet is more important"): diffusers' guess mode. The ControlNet sees
  only the conditional half of the batch (the unconditional half gets no residuals, so guidance
  pushes towards the guide), and its residuals are scaled by ``logspace(-1, 0)`` (0.1 at the
  shallowest to 1 at the middle block), exactly as ``guess_mode=True`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.models import MultiControlNetModel

from bot.request import ControlMode

__all__ = ["SOFT_WEIGHTS", "GatedControlNets", "GatedImagePrompts", "StepGate"]

# A1111 ControlNet extension's soft injection weights (hook.py), shallowest residual first.
SOFT_WEIGHTS = tuple(0.825 ** float(12 - i) for i in range(13))

Residuals = tuple[list[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class StepGate:
    """When and how one ControlNet acts: steps `first` to `last` (1-based, inclusive, among the steps that run)."""

    first: int
    last: int
    mode: ControlMode


class GatedControlNets(MultiControlNetModel):  # type: ignore[misc]  # diffusers is untyped
    """The ControlNets of one pipeline call, each run only on its own steps and in its own mode.

    Make a new one for each pipeline call: it counts the calls of that run.

    Args:
        nets: the loaded ControlNets (shared, never copied).
        gates: each net's steps and mode.
        order: the scheduler's order: UNet calls per step (Heun: 2, its last step 1).
        cfg: whether the pipeline batches unconditional and conditional halves (guidance above 1).
    """

    def __init__(self, nets: Sequence[ControlNetModel], gates: Sequence[StepGate], order: int, cfg: bool) -> None:
        super().__init__(list(nets))
        if len(gates) != len(nets):
            raise ValueError("one gate per ControlNet")
        self.gates = tuple(gates)
        self.order = order
        self.cfg = cfg
        self.calls = 0
        # (step, index of the net) for each ControlNet call: what acted where.
        self.applied: list[tuple[int, int]] = []

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Any,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: list[torch.Tensor],
        conditioning_scale: list[float],
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guess_mode: bool = False,
        return_dict: bool = False,
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        """Return the summed residuals of the ControlNets acting on this call's step, or (None, None).

        None is what the UNet takes for "no ControlNet": the step is then the one a pipeline
        without ControlNet makes. The pipeline is called with ``guess_mode=False``; each
        ControlNet's own mode is applied here. Always a tuple (the pipelines ask for one).
        """
        # Heun's calls are (first order, correction) per step and one call for the last: call // 2.
        step = self.calls // self.order + 1
        self.calls += 1
        total: Residuals | None = None
        inputs = (sample, encoder_hidden_states, added_cond_kwargs or {})
        extra = {
            "class_labels": class_labels,
            "timestep_cond": timestep_cond,
            "attention_mask": attention_mask,
            "cross_attention_kwargs": cross_attention_kwargs,
        }
        for index, (net, gate, image, scale) in enumerate(
            zip(self.nets, self.gates, controlnet_cond, conditioning_scale, strict=True)
        ):
            # Weight 0 adds zeros; not running it is the same image, sooner.
            if scale == 0 or not gate.first <= step <= gate.last:
                continue
            residuals = self._one(net, gate.mode, inputs, timestep, image, scale, extra)
            self.applied.append((step, index))
            if total is None:
                total = residuals
            else:
                total = ([a + b for a, b in zip(total[0], residuals[0], strict=True)], total[1] + residuals[1])
        return total if total is not None else (None, None)

    def _one(
        self,
        net: ControlNetModel,
        mode: ControlMode,
        inputs: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
        timestep: Any,
        image: torch.Tensor,
        scale: float,
        extra: dict[str, Any],
    ) -> Residuals:
        sample, hidden, added = inputs
        # What the pipelines do with guess_mode=True: the conditional half only, zeros for the other.
        cond_only = mode == "controlnet" and self.cfg

        def half(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.chunk(2)[1] if cond_only else tensor

        down, mid = net(
            half(sample),
            timestep,
            encoder_hidden_states=half(hidden),
            controlnet_cond=half(image),
            conditioning_scale=scale,
            added_cond_kwargs={key: half(value) for key, value in added.items()},
            guess_mode=mode == "controlnet",
            return_dict=False,
            **extra,
        )
        if cond_only:
            return [torch.cat([torch.zeros_like(d), d]) for d in down], torch.cat([torch.zeros_like(mid), mid])
        if mode == "prompt":
            weights = SOFT_WEIGHTS[: len(down) + 1]
            if len(weights) != len(down) + 1:
                raise ValueError(f"soft weights are defined for up to 13 residuals, not {len(down) + 1}")
            down = [d * w for d, w in zip(down, weights, strict=False)]
            mid = mid * weights[-1]
        return list(down), mid


class GatedImagePrompts:
    """The IP-Adapters of one pipeline call, each acting only on its own steps (the ControlNets' rule).

    diffusers runs an IP-Adapter through the UNet's ``encoder_hid_proj``, which projects each
    adapter's image embedding to the tokens its cross-attentions read, once per UNet call. Used as
    a forward hook on that projection (`attach`), this counts the calls as `GatedControlNets` does
    and puts zeros in place of an adapter's tokens off its steps: its keys and values are then zero
    (the IP-Adapter projections have no bias), so its attention adds exactly nothing, the step a
    pipeline without it makes.

    Args:
        gates: each adapter's steps (its mode is always balanced).
        weights: each adapter's weight; 0 acts on no step.
        order: the scheduler's order: UNet calls per step (Heun: 2, its last step 1).
    """

    def __init__(self, gates: Sequence[StepGate], weights: Sequence[float], order: int) -> None:
        self.gates = tuple(gates)
        self.weights = tuple(weights)
        self.order = order
        self.calls = 0
        # (step, index of the adapter) for each step an adapter acted on.
        self.applied: list[tuple[int, int]] = []

    def attach(self, projection: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
        """Gate `projection` (a UNet's ``encoder_hid_proj``) until the returned handle is removed."""
        return projection.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        step = self.calls // self.order + 1
        self.calls += 1
        gated = []
        for index, (gate, weight, one) in enumerate(zip(self.gates, self.weights, tokens, strict=True)):
            if weight == 0 or not gate.first <= step <= gate.last:
                gated.append(torch.zeros_like(one))
            else:
                gated.append(one)
                self.applied.append((step, index))
        return gated
