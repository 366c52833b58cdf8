"""What the hosted-API backends send, and what they refuse before sending: pure functions, no network."""

from __future__ import annotations

import base64
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import InvalidOption
from bot.request import GenerationRequest
from inference.capabilities import CAPABILITIES
from inference.modelslab import build_body
from inference.runware import build_task, steps_and_strength
from tests.inference.remote import CATALOG, request

UUID = "6f6d6f6e-0000-4000-8000-000000000001"


def test_runware_task_maps_every_field_to_runware_names() -> None:
    task = build_task(
        request(
            "a red fox --no blurry --steps 30 --refiner 80 --cfg 6.5 --sampler 'Euler a' --n 2 --ar 16:9"
            " --lora pixel-art-remote:0.8 --seed 42"
        ),
        CATALOG,
        UUID,
    )
    assert task == {
        "taskType": "imageInference",
        "taskUUID": UUID,
        "positivePrompt": "a red fox",
        "negativePrompt": "blurry",
        "model": "civitai:101055@128078",
        "width": 1344,
        "height": 768,
        "steps": 30,
        "CFGScale": 6.5,
        "scheduler": "Euler a",
        "seed": 42,
        "numberResults": 2,
        "outputType": "URL",
        "outputFormat": "PNG",
        "includeCost": True,
        "deliveryMethod": "sync",
        # Runware's content check on each image: its NSFWContent answer decides spoilers
        "safety": {"checkContent": True},
        # the split in steps, exactly as shown to the user: 24 base + 6 refiner
        "refiner": {"model": "civitai:101055@128080", "startStep": 24},
        "lora": [{"model": "civitai:120096@135931", "weight": 0.8}],
    }


def test_runware_task_sends_class_names_for_schedulers_it_lists_that_way() -> None:
    assert build_task(request("a fox --sampler DDIM"), CATALOG, UUID)["scheduler"] == "DDIMScheduler"
    assert (
        build_task(request("a fox --sampler 'DPM++ 2M'"), CATALOG, UUID)["scheduler"] == "DPMSolverMultistepScheduler"
    )


def test_modelslab_body_sends_numbers_as_strings_and_flags_as_yes_no() -> None:
    body = build_body(
        request("a red fox --no blurry --steps 30 --cfg 6.5 --n 2 --lora pixel-art-remote:0.8 --seed 42"),
        CATALOG,
        "ml-key",
        "track-1",
    )
    assert body == {
        "key": "ml-key",
        "model_id": "sdxl",
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "width": "1024",
        "height": "1024",
        "samples": "2",
        "num_inference_steps": "30",
        "guidance_scale": "6.5",
        "seed": "42",
        "scheduler": "DPMSolverMultistepScheduler",
        "use_karras_sigmas": "yes",
        "enhance_prompt": "no",
        "safety_checker": "yes",
        "webhook": None,
        "track_id": "track-1",
        "lora_model": "pixel-art-xl",
        "lora_strength": "0.8",
    }


@pytest.mark.parametrize(
    ("line", "backend", "sentence"),
    [
        (
            "a fox --refiner 85",
            "modelslab",
            "Refiner cannot take over at a chosen step on ModelsLab; the local backend and Runware can.",
        ),
        (
            "a fox --ar 16:9 --steps 60",
            "modelslab",
            "Size is at most 1024×1024 on ModelsLab, not 1344×768; the local backend and Runware can.",
        ),
        (
            "a fox --steps 60",
            "modelslab",
            "Steps are at most 50 on ModelsLab, not 60; the local backend and Runware can.",
        ),
        (
            "a fox --cfg 0",
            "modelslab",
            "Cfg must be from 1 to 20 on ModelsLab, not 0; the local backend and Runware can.",
        ),
        (
            "a fox --sampler 'DPM++ 3M SDE'",
            "runware",
            "Scheduler 'DPM++ 3M SDE' is not available on Runware (it has DPM++ 2M Karras, DPM++ 2M, "
            "DPM++ 2M SDE Karras, Euler, Euler a, UniPC, DDIM, Heun, LCM); the local backend can.",
        ),
        ("a fox --lora runware-only", "modelslab", "Lora 'runware-only' is not available on ModelsLab; Runware can."),
        ("a fox --lora pixel-art", "runware", "Lora 'pixel-art' is not available on Runware; the local backend can."),
        (
            "a fox --steps 10 --refiner 5",
            "runware",
            "Refiner must leave the base model at least 2 steps on Runware, not 1; the local backend can.",
        ),
        ("a fox --model tiny", "runware", "Model 'tiny' is not available on Runware; the local backend can."),
    ],
)
def test_a_request_a_backend_cannot_make_is_refused_naming_who_can(line: str, backend: str, sentence: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        CAPABILITIES[backend].check(request(line), CATALOG)  # type: ignore[index]
    assert str(refused.value) == sentence


@given(
    steps=st.integers(1, 100),
    count=st.integers(1, 4),
    cfg=st.floats(0, 50).map(lambda x: round(x, 1)),
    percent=st.one_of(st.none(), st.integers(1, 99)),
)
def test_modelslab_either_refuses_or_sends_only_what_its_docs_allow(
    steps: int, count: int, cfg: float, percent: int | None
) -> None:
    refiner = f" --refiner {percent}" if percent else ""
    try:
        req = request(f"a fox --steps {steps} --n {count} --cfg {cfg}{refiner} --ar 1:1")
    except InvalidOption:
        return  # the request model itself refuses it (e.g. a refiner split leaving no refiner step)
    try:
        body = build_body(req, CATALOG, "k", "t")
    except InvalidOption as error:
        assert "ModelsLab" in str(error)
        return
    assert 1 <= int(body["num_inference_steps"]) <= 50
    assert 1 <= int(body["samples"]) <= 4
    assert 1 <= float(body["guidance_scale"]) <= 20
    assert int(body["width"]) <= 1024 and int(body["height"]) <= 1024
    assert all(isinstance(value, str) or value is None for value in body.values())


def with_inputs(line: str, *, strength: float = 0.5, mask: bool = False) -> GenerationRequest:
    """Return the request of `line` starting from a stored input image (and a mask)."""
    changes: dict[str, object] = {"init_image": "ab" * 32, "strength": strength}
    if mask:
        changes["mask_image"] = "cd" * 32
    return GenerationRequest.from_dict({**request(line).to_dict(), **changes})


def test_runware_task_carries_the_inputs_as_data_uris_with_a_pair_that_runs_the_steps_shown() -> None:
    req = with_inputs("a red fox --steps 30 --seed 42 --ar 1:1", strength=0.25, mask=True)
    task = build_task(req, CATALOG, UUID, inputs={"ab" * 32: b"\x89PNG image", "cd" * 32: b"\x89PNG mask"})
    assert task["seedImage"] == "data:image/png;base64," + base64.b64encode(b"\x89PNG image").decode()
    assert task["maskImage"] == "data:image/png;base64," + base64.b64encode(b"\x89PNG mask").decode()
    # 30 × 0.25 = 7.5 runs 8 (halves up); Runware is sent 30 × 8/30, which no rounding can move off 8
    assert (task["steps"], task["strength"], req.run_steps) == (30, 8 / 30, 8)


def test_every_steps_and_run_pair_has_an_exact_runware_pair_at_most_two_steps_away() -> None:
    """For 1 ≤ run ≤ steps ≤ 100: strength × steps is run exactly in floats, so truncating, rounding and
    rounding up all run `run`; the step count sent moves only where no float strength fits."""
    moved = 0
    for steps in range(1, 101):
        for run in range(1, steps + 1):
            sent, strength = steps_and_strength(steps, run)
            assert strength * sent == run and 0 < strength <= 1 and abs(sent - steps) <= 2
            assert math.floor(strength * sent) == math.ceil(strength * sent) == run
            moved += sent != steps
    assert moved < 5050 * 0.06


@pytest.mark.parametrize(
    ("req", "backend", "sentence"),
    [
        (
            lambda: with_inputs("a fox"),
            "modelslab",
            "Image is not available on ModelsLab; the local backend and Runware can.",
        ),
        (
            lambda: with_inputs("a fox", mask=True),
            "modelslab",
            "Image is not available on ModelsLab; the local backend and Runware can.",
        ),
        (
            lambda: with_inputs("a fox --refiner 80"),
            "runware",
            "Refiner cannot follow an input image on Runware; the local backend can.",
        ),
    ],
    ids=["modelslab-image", "modelslab-mask", "runware-refiner-after-image"],
)
def test_input_images_a_backend_cannot_take_are_refused_naming_who_can(req, backend: str, sentence: str) -> None:
    with pytest.raises(InvalidOption) as refused:
        CAPABILITIES[backend].check(req(), CATALOG)  # type: ignore[index]
    assert str(refused.value) == sentence


def test_the_ray_cluster_takes_input_images_and_masks() -> None:
    """Its replicas run the local worker's code and get the files with the job (inference/ray_serve.py)."""
    CAPABILITIES["ray"].check(with_inputs("a fox --refiner 80", mask=True), CATALOG)
