"""The core's sampler names (`bot.rules.SCHEDULERS`), mapped to diffusers schedulers.

One table: core name -> (diffusers class name, config overrides). It translates
the core's names and adds none of its own (a test keeps its keys equal to the
core's list). The worker builds a scheduler with
``getattr(diffusers, cls).from_config(own_config, **overrides)`` where
``own_config`` is the model's *original* scheduler config, never the last one
switched to, so that no override leaks from one job into the next. Class names
are strings so that the bot can import this module without torch or diffusers.
Every override that one entry sets is set by its siblings too (Karras on or
off, algorithm type), so a model whose own config turns one on cannot change
what a name means.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_STEPS", "SCHEDULERS"]

_KARRAS_OFF: dict[str, Any] = {"use_karras_sigmas": False}

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DPM++ 2M": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, **_KARRAS_OFF},
    ),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DPM++ 3M SDE": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, **_KARRAS_OFF},
    ),
    "Euler": ("EulerDiscreteScheduler", dict(_KARRAS_OFF)),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", dict(_KARRAS_OFF)),
    "DDIM": ("DDIMScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", dict(_KARRAS_OFF)),
    "LCM": ("LCMScheduler", {}),
}

# LCMScheduler picks its steps out of a 50-step training schedule and refuses more.
MAX_STEPS: dict[str, int] = {"LCM": 50}
