"""Turn a base/refiner split in steps into the fractions diffusers' SDXL pipelines take.

diffusers cuts the schedule by timestep *value*: with ``denoising_end=f`` the
base keeps the timesteps ``t >= c`` and with ``denoising_start=f`` the refiner
keeps ``t < c``, where ``c = int(round(T - f·T))`` and ``T`` is the number of
training timesteps (1000). On Karras or otherwise uneven schedules a fraction
of 0.8 is not 80% of the steps (30 DPM++ 2M Karras steps split 19 + 11), so we
pick the integer cutoff ``c`` that puts exactly the wanted number of steps on
each side and pass ``f = (T - c) / T`` to both pipelines.

Second-order schedulers (Heun) evaluate the UNet twice per step: their
timesteps are ``[t0, t1, t1, t2, t2, …, tN-1, tN-1]`` (``2N - 1`` calls), step
``s < N`` being the calls at ``ts-1`` (first order) and ``ts`` (correction) and
the last step a single Euler call. The refiner of diffusers starts on a first
order call (it rounds an even count of ``t < c`` up by one), so a base that
ran ``k`` steps has made ``2k`` calls; the value filter would let it make one
more (the first half of step ``k + 1``, whose result the refiner would then
misread), so the plan says where the base must stop early (`base_stop_after`).

Everything here is plain Python on a list of timesteps, so it is unit-tested
without torch.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SplitPlan", "plan_split"]


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """How to run base and refiner so that they take the planned number of steps each.

    Attributes:
        base_steps: steps the base runs (what the user sees).
        refiner_steps: steps the refiner runs.
        fraction: ``denoising_end`` of the base and ``denoising_start`` of the refiner.
        cutoff: the timestep value ``c`` the fraction stands for.
        base_calls: UNet calls of the base.
        refiner_calls: UNet calls of the refiner.
        base_stop_after: stop the base after this many UNet calls (None: let it end by itself).
        exact: whether the split is the one asked for.
        requested: the (base, refiner) steps asked for.
    """

    base_steps: int
    refiner_steps: int
    fraction: float
    cutoff: int
    base_calls: int
    refiner_calls: int
    base_stop_after: int | None
    exact: bool
    requested: tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Candidate:
    cutoff: int
    fraction: float
    base_calls: int
    refiner_calls: int
    base_kept: int


def plan_split(
    timesteps: Sequence[float], base_steps: int, order: int = 1, num_train_timesteps: int = 1000
) -> SplitPlan:
    """Find the fraction that gives the base `base_steps` steps and the refiner the rest.

    Args:
        timesteps: the scheduler's timesteps for the whole run, as it sets them
            (``len == steps`` for first-order schedulers, ``2·steps - 1`` for Heun).
        base_steps: steps the base should run, from 1 to ``steps - 1``.
        order: the scheduler's ``order`` (1, or 2 for Heun).
        num_train_timesteps: the scheduler's ``num_train_timesteps``.

    Returns:
        The exact plan when one exists; otherwise the achievable split nearest
        to the one asked for (ties go to the larger base), with ``exact=False``.

    Raises:
        ValueError: the schedule cannot be split at all (fewer than two steps).
    """
    if order not in (1, 2):
        raise ValueError(f"only first- and second-order schedulers can be split, not order {order}")
    steps = _steps_of(len(timesteps), order)
    requested = (base_steps, steps - base_steps)
    by_base: dict[int, list[_Candidate]] = {}
    for candidate in _candidates(timesteps, order, num_train_timesteps):
        by_base.setdefault(_calls_to_steps(candidate.base_calls, order), []).append(candidate)
    if not by_base:
        raise ValueError(f"a schedule of {steps} step(s) cannot be split between base and refiner")
    achieved = min(by_base, key=lambda k: (abs(k - base_steps), -k))
    options = by_base[achieved]
    # The middle cutoff of the range that works is the farthest from float trouble at either end.
    chosen = options[len(options) // 2]
    return SplitPlan(
        base_steps=achieved,
        refiner_steps=steps - achieved,
        fraction=chosen.fraction,
        cutoff=chosen.cutoff,
        base_calls=chosen.base_calls,
        refiner_calls=chosen.refiner_calls,
        base_stop_after=chosen.base_calls if chosen.base_calls < chosen.base_kept else None,
        exact=achieved == base_steps,
        requested=requested,
    )


def _steps_of(calls: int, order: int) -> int:
    if order == 1:
        return calls
    if calls % 2 == 0:
        raise ValueError(f"a second-order schedule has an odd number of timesteps, not {calls}")
    return (calls + 1) // 2


def _calls_to_steps(calls: int, order: int) -> int:
    # Base calls of a second-order run come in whole pairs; refiner calls end on the single Euler call.
    return calls if order == 1 else (calls + 1) // 2


def _candidates(timesteps: Sequence[float], order: int, num_train: int) -> list[_Candidate]:
    """Simulate both pipelines' filters for every integer cutoff; keep the consistent ones."""
    ascending = sorted(float(t) for t in timesteps)
    total = len(ascending)
    found = []
    for cutoff in range(1, num_train):
        fraction = (num_train - cutoff) / num_train
        if not 0 < fraction < 1 or round(num_train - fraction * num_train) != cutoff:
            continue
        below = bisect.bisect_left(ascending, cutoff)
        base_kept = total - below
        refiner_calls = below
        if order == 2 and refiner_calls % 2 == 0:
            refiner_calls += 1  # diffusers' img2img does this so as not to start mid-step
        base_calls = total - refiner_calls
        if base_calls < 1 or refiner_calls < 1 or base_calls > base_kept:
            continue
        if order == 2 and base_calls % 2:
            continue
        found.append(_Candidate(cutoff, fraction, base_calls, refiner_calls, base_kept))
    return found
