"""The step split between base and refiner, as fractions diffusers understands."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.local._schedulers import SCHEDULERS
from inference.local._split import plan_split


def diffusers_counts(timesteps, fraction, order=1, num_train=1000):
    """What StableDiffusionXL(Img2Img)Pipeline do with denoising_end / denoising_start = fraction."""
    cutoff = round(num_train - fraction * num_train)
    base_kept = len([t for t in timesteps if t >= cutoff])
    refiner = sum(1 for t in timesteps if t < cutoff)
    if order == 2 and refiner % 2 == 0:
        refiner += 1
    return base_kept, refiner


def heun(values):
    """Heun's timesteps for step-start values [t0 … tN-1]: t0, then every later one twice."""
    return [values[0], *[t for t in values[1:] for _ in range(2)]]


def test_karras_like_schedule_splits_in_steps_not_values():
    """30 uneven timesteps at 80%: 24 + 6 steps, where the naive fraction 0.8 gives fewer base steps."""
    timesteps = [999 * (1 - i / 30) ** 3 for i in range(30)]
    plan = plan_split(timesteps, 24)
    assert (plan.base_steps, plan.refiner_steps, plan.exact) == (24, 6, True)
    assert diffusers_counts(timesteps, plan.fraction) == (24, 6)
    assert diffusers_counts(timesteps, 0.8)[0] != 24


@pytest.mark.parametrize(("steps", "base"), [(30, 24), (20, 18), (25, 20), (10, 5), (7, 6), (2, 1)])
def test_even_leading_schedule(steps, base):
    """Evenly spaced integer timesteps split exactly at every base step count."""
    stride = 1000 // steps
    timesteps = [1 + stride * i for i in reversed(range(steps))]
    plan = plan_split(timesteps, base)
    assert (plan.base_steps, plan.refiner_steps, plan.exact) == (base, steps - base, True)
    assert diffusers_counts(timesteps, plan.fraction) == (plan.base_calls, plan.refiner_calls) == (base, steps - base)
    assert plan.base_stop_after is None


def test_cutoff_round_trips_through_float():
    """The fraction maps back to the planned integer cutoff with diffusers' own formula."""
    plan = plan_split([999, 666, 333, 1], 2)
    assert round(1000 - plan.fraction * 1000) == plan.cutoff
    assert 333 < plan.cutoff <= 666


def test_fractional_timesteps():
    """Float timesteps (Euler with Karras sigmas) split where an integer cutoff fits between them."""
    timesteps = [999.4, 700.9, 500.2, 400.5, 10.25]
    plan = plan_split(timesteps, 2)
    assert (plan.base_steps, plan.exact) == (2, True)
    assert diffusers_counts(timesteps, plan.fraction) == (2, 3)


def test_no_integer_between_close_fractional_timesteps_picks_nearest():
    """700.9 and 700.2 have no integer between them: base 2 is impossible, so the nearest is used and said."""
    timesteps = [999.0, 700.9, 700.2, 400.0]
    plan = plan_split(timesteps, 2)
    assert not plan.exact
    assert plan.requested == (2, 2)
    assert (plan.base_steps, plan.refiner_steps) == (3, 1)  # ties go to the larger base
    assert diffusers_counts(timesteps, plan.fraction) == (3, 1)


def test_duplicated_timesteps_use_nearest_split():
    """Karras schedules at many steps repeat small timesteps; a split between twins is impossible."""
    timesteps = [900, 500, 100, 4, 4, 2, 1, 1, 1, 0]
    plan = plan_split(timesteps, 4)  # between the two 4s
    assert not plan.exact
    assert plan.base_steps in (3, 5)
    assert diffusers_counts(timesteps, plan.fraction) == (plan.base_steps, plan.refiner_steps)
    assert plan_split(timesteps, 3).exact


def test_base_of_zero_steps_moves_to_one():
    """A split with no base step is impossible; the nearest (one base step) is used."""
    plan = plan_split([999, 500, 1], 0)
    assert (plan.base_steps, plan.refiner_steps, plan.exact) == (1, 2, False)


def test_single_step_cannot_be_split():
    """One step leaves nothing to hand over."""
    with pytest.raises(ValueError, match="cannot be split"):
        plan_split([999], 1)


@pytest.mark.parametrize(("steps", "base"), [(30, 24), (20, 18), (10, 5), (7, 6), (2, 1)])
def test_heun_base_stops_after_whole_steps(steps, base):
    """Heun: base k steps = 2k UNet calls (then stopped), refiner N-k steps = 2(N-k)-1 calls."""
    stride = 1000 // steps
    timesteps = heun([1 + stride * i for i in reversed(range(steps))])
    assert len(timesteps) == 2 * steps - 1
    plan = plan_split(timesteps, base, order=2)
    assert (plan.base_steps, plan.refiner_steps, plan.exact) == (base, steps - base, True)
    assert (plan.base_calls, plan.refiner_calls) == (2 * base, 2 * (steps - base) - 1)
    assert plan.base_calls + plan.refiner_calls == len(timesteps)
    # diffusers' value filter would let the base start step k+1; the plan stops it one call early.
    base_kept, refiner = diffusers_counts(timesteps, plan.fraction, order=2)
    assert (base_kept, refiner) == (2 * base + 1, plan.refiner_calls)
    assert plan.base_stop_after == 2 * base


def test_heun_schedule_must_have_odd_length():
    """A second-order schedule of even length is not Heun's pattern."""
    with pytest.raises(ValueError, match="odd"):
        plan_split([999, 500, 500, 1], 1, order=2)


# No deadline: a loaded CI box stalls for seconds at random, which says nothing about the code.
@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.integers(min_value=1, max_value=999), min_size=2, max_size=60, unique=True),
    st.data(),
)
def test_distinct_integer_timesteps_always_split_exactly(values, data):
    """Distinct integer timesteps leave room for a cutoff at every step; diffusers agrees with the plan."""
    timesteps = sorted(values, reverse=True)
    base = data.draw(st.integers(min_value=1, max_value=len(timesteps) - 1))
    plan = plan_split(timesteps, base)
    assert plan.exact
    assert diffusers_counts(timesteps, plan.fraction) == (base, len(timesteps) - base)


@settings(deadline=None, max_examples=60)
@given(st.lists(st.floats(min_value=0, max_value=999.9), min_size=2, max_size=40), st.data())
def test_any_schedule_plan_matches_diffusers(values, data):
    """Whatever the schedule (repeats, fractions), the reported split is the one diffusers runs."""
    timesteps = sorted(values, reverse=True)
    base = data.draw(st.integers(min_value=0, max_value=len(timesteps)))
    try:
        plan = plan_split(timesteps, base)
    except ValueError:
        return
    assert plan.exact == (plan.base_steps == base)
    assert diffusers_counts(timesteps, plan.fraction) == (plan.base_steps, plan.refiner_steps)
    assert plan.base_steps + plan.refiner_steps == len(timesteps)


def scheduler_timesteps(name, steps):
    import diffusers

    from inference import tiny
    from inference.local._schedulers import SCHEDULERS

    class_name, overrides = SCHEDULERS[name]
    scheduler = getattr(diffusers, class_name).from_config(tiny.SDXL_SCHEDULER_CONFIG, **overrides)
    scheduler.set_timesteps(steps, device="cpu")
    return [float(t) for t in scheduler.timesteps], scheduler.order


@pytest.mark.parametrize("name", tuple(SCHEDULERS))
@pytest.mark.parametrize(("steps", "base"), [(30, 24), (20, 18), (25, 20), (10, 5), (7, 6)])
def test_every_sampler_splits_exactly_on_the_sdxl_schedule(name, steps, base):
    """Every sampler on SDXL's own scheduler config splits at the asked step."""
    timesteps, order = scheduler_timesteps(name, steps)
    plan = plan_split(timesteps, base, order)
    assert (plan.base_steps, plan.refiner_steps, plan.exact) == (base, steps - base, True)


def test_dpm_karras_at_100_steps_reports_the_split_it_can_do():
    """DPM++ 2M Karras at 100 steps repeats its last timesteps; a split there is moved and flagged."""
    timesteps, order = scheduler_timesteps("DPM++ 2M Karras", 100)
    twins = [i for i in range(1, len(timesteps)) if timesteps[i] == timesteps[i - 1]]
    assert twins, "the schedule was expected to repeat a timestep"
    plan = plan_split(timesteps, twins[0], order)
    assert not plan.exact
    assert abs(plan.base_steps - twins[0]) == 1
    assert diffusers_counts(timesteps, plan.fraction) == (plan.base_steps, plan.refiner_steps)
