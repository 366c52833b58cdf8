"""Checks FakeModelsLab with a plain HTTP client (no imagebot code): answers, charges, faults."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.modelslab import FakeModelsLab, Fault, colour_for_seed


@pytest.fixture
async def fake() -> AsyncIterator[FakeModelsLab]:
    async with FakeModelsLab() as f:
        yield f


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def body(fake: FakeModelsLab, **fields: Any) -> dict[str, Any]:
    """A valid submit body as a careful client sends it (numbers as strings), overridden by ``fields``."""
    base: dict[str, Any] = {
        "key": fake.api_key,
        "model_id": "sdxl",
        "prompt": "a red fox",
        "negative_prompt": None,
        "width": "256",
        "height": "128",
        "samples": "1",
        "num_inference_steps": "20",
        "guidance_scale": "7",
        "seed": "42",
        "scheduler": "DPMSolverMultistepScheduler",
        "use_karras_sigmas": "yes",
        "safety_checker": "no",
        "webhook": None,
        "track_id": None,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


async def submit(http: httpx.AsyncClient, fake: FakeModelsLab, **fields: Any) -> dict[str, Any]:
    resp = await http.post(fake.url, json=body(fake, **fields))
    assert resp.status_code == 200
    return resp.json()


async def fetch(http: httpx.AsyncClient, url: str, fake: FakeModelsLab, **extra: Any) -> httpx.Response:
    return await http.post(url, json={"key": fake.api_key, **extra})


def png_info(data: bytes) -> tuple[tuple[int, int], tuple[int, int, int]]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size, image.convert("RGB").getpixel((0, 0))


# -- key and validation ----------------------------------------------------------------------------


async def test_bad_or_missing_key_is_an_error_status_and_never_recorded(
    fake: FakeModelsLab, http: httpx.AsyncClient
) -> None:
    answer = await submit(http, fake, key="wrong")
    assert answer["status"] == "error" and answer["message"] == "Invalid Api Key" and answer["tip"]
    answer = await submit(http, fake, key=...)
    assert answer["message"] == "Invalid Api Key"
    await submit(http, fake)  # a good one, so the real key went over the wire
    assert fake.charges == [1000]
    assert all(b["key"] == "<redacted>" for b in fake.submits[::2])
    assert fake.api_key not in repr(fake.requests) + repr(fake.jobs) + repr(fake)
    assert [r.status for r in fake.requests] == ["error", "error", "success"]


async def test_json_content_type_is_required(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    resp = await http.post(fake.url, data={"key": fake.api_key, "model_id": "sdxl", "prompt": "x"})
    assert resp.status_code == 200 and resp.json()["status"] == "error"
    assert "application/json" in resp.json()["message"]
    assert fake.charges == []


async def test_number_sent_as_json_number_is_accepted_but_recorded(
    fake: FakeModelsLab, http: httpx.AsyncClient
) -> None:
    answer = await submit(http, fake, width=256, seed=7, guidance_scale=7.5)
    assert answer["status"] == "success" and answer["meta"]["W"] == 256
    assert fake.type_violations == [("width", 256), ("seed", 7)]  # guidance_scale may be a number
    fake.type_violations.clear()
    await submit(http, fake)
    assert fake.type_violations == []


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"width": "2048"}, "width"),
        ({"height": "100"}, "height"),
        ({"width": "260"}, "width"),  # not divisible by 8
        ({"width": "wide"}, "width"),
        ({"samples": "5"}, "samples"),
        ({"num_inference_steps": "60"}, "num_inference_steps"),
        ({"guidance_scale": "25"}, "guidance_scale"),
        ({"seed": "abc"}, "seed"),
        ({"scheduler": "DPM++ 2M Karras"}, "scheduler"),
        ({"steps": "20"}, "steps"),  # unknown field
        ({"safety_checker": False}, "safety_checker"),  # a JSON boolean is not "no"
        ({"use_karras_sigmas": True}, "use_karras_sigmas"),
        ({"prompt": ...}, "prompt"),
        ({"model_id": ""}, "model_id"),
        ({"lora_model": "pixel-art-xl"}, "lora_strength"),  # strength required with a lora
        ({"lora_model": "nope", "lora_strength": "0.5"}, "lora_model"),
        ({"lora_model": "pixel-art-xl", "lora_strength": "1.5"}, "lora_strength"),
        ({"lora_model": "pixel-art-xl", "lora_strength": "0.5,0.5"}, "lora_strength"),
        ({"clip_skip": "9"}, "clip_skip"),
        ({"webhook": 5}, "webhook"),
    ],
)
async def test_validation_error_names_the_first_bad_field(
    fake: FakeModelsLab, http: httpx.AsyncClient, fields: dict[str, Any], field_name: str
) -> None:
    answer = await submit(http, fake, **fields)
    assert answer["status"] == "error"
    assert list(answer["message"]) == [field_name]
    (text,) = answer["message"][field_name]
    assert text.startswith(f"The {field_name} ")
    assert fake.charges == [] and fake.jobs == {}


async def test_first_problem_wins(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    answer = await submit(http, fake, width="2048", num_inference_steps="60")
    assert list(answer["message"]) == ["width"]


async def test_unknown_model_and_known_lora(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    answer = await submit(http, fake, model_id="sd15")
    assert answer == {"status": "error", "message": "Model id not found"}
    answer = await submit(http, fake, lora_model="pixel-art-xl", lora_strength="0.6")
    assert answer["status"] == "success" and answer["meta"]["lora"] == "pixel-art-xl"
    job = fake.jobs[answer["id"]]
    assert job.request.loras == [("pixel-art-xl", 0.6)]
    assert job.request.flag("use_karras_sigmas") and not job.request.flag("safety_checker")
    assert job.request.scheduler == "DPMSolverMultistepScheduler" and job.request.guidance_scale == 7.0


# -- success ---------------------------------------------------------------------------------------


async def test_success_serves_pngs_of_the_right_size_and_seeds(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    answer = await submit(http, fake, samples="2", seed="42")
    assert answer["status"] == "success" and answer["id"] == 1000
    assert isinstance(answer["generationTime"], float)
    meta = answer["meta"]
    assert (meta["W"], meta["H"], meta["seed"], meta["n_samples"], meta["steps"]) == (256, 128, 42, 2, 20)
    assert meta["model_id"] == "sdxl" and meta["prompt"] == "a red fox" and meta["safetychecker"] == "no"
    assert len(answer["output"]) == 2
    for i, url in enumerate(answer["output"]):
        resp = await http.get(url)
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
        assert png_info(resp.content) == ((256, 128), colour_for_seed(42 + i))
    assert fake.downloads == answer["output"]
    assert fake.charges == [1000]
    job = fake.jobs[1000]
    assert job.seeds == [42, 43] and job.state == "success" and job.request.width == 256


async def test_identical_submits_are_two_jobs_and_two_charges(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    first = await submit(http, fake)
    second = await submit(http, fake)
    assert (first["id"], second["id"]) == (1000, 1001)
    assert fake.charges == [1000, 1001] and fake.submits[0] == fake.submits[1]


async def test_null_seed_is_random_and_reported(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    answer = await submit(http, fake, seed=None, samples="3")
    seed = answer["meta"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert fake.jobs[answer["id"]].seeds == [seed, seed + 1, seed + 2]
    assert fake.jobs[answer["id"]].request.seed is None


async def test_service_time_delays_success_and_fetch_sees_processing(http: httpx.AsyncClient) -> None:
    async with FakeModelsLab(service_time=0.3) as fake:
        started = time.monotonic()
        task = asyncio.ensure_future(http.post(fake.url, json=body(fake)))
        await fake.wait_for(lambda: fake.charges)
        during = await fetch(http, fake.fetch_url, fake, request_id=1000)
        assert during.json()["status"] == "processing"
        answer = (await task).json()
        assert answer["status"] == "success" and time.monotonic() - started >= 0.3


# -- fetch -----------------------------------------------------------------------------------------


async def test_processing_then_success_via_fetch_result(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("processing", polls=2, eta=7))
    answer = await submit(http, fake, samples="2")
    assert answer["status"] == "processing" and answer["eta"] == 7 and answer["output"] == []
    assert answer["fetch_result"] == f"{fake.base}/api/v3/dreambooth/fetch/{answer['id']}"
    assert answer["messege"] and len(answer["future_links"]) == 2 and answer["meta"]["seed"] == 42
    assert fake.charges == [answer["id"]]
    statuses = []
    for _ in range(3):
        resp = await fetch(http, answer["fetch_result"], fake)
        statuses.append(resp.json()["status"])
    assert statuses == ["processing", "processing", "success"]
    assert resp.json() == {"status": "success", "id": answer["id"], "output": answer["future_links"]}
    image = await http.get(answer["future_links"][1])
    assert png_info(image.content) == ((256, 128), colour_for_seed(43))
    assert fake.charges == [answer["id"]]  # polling is free


async def test_processing_answer_while_polling_has_the_legacy_fields(
    fake: FakeModelsLab, http: httpx.AsyncClient
) -> None:
    fake.inject(kind="processing", polls=1)
    answer = await submit(http, fake)
    resp = await fetch(http, fake.fetch_url, fake, request_id=answer["id"])
    assert resp.json() == {
        "status": "processing",
        "messege": "try again later.",
        "output": "",
        "tip": resp.json()["tip"],
        "id": answer["id"],
    }


async def test_fetch_routes_with_request_id(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("processing", polls=0))
    answer = await submit(http, fake)
    job_id = answer["id"]
    by_body = await fetch(http, fake.fetch_url, fake, request_id=job_id)
    assert by_body.json()["status"] == "success" and by_body.json()["output"]
    by_str = await fetch(http, fake.fetch_url, fake, request_id=str(job_id))
    assert by_str.json()["status"] == "success"
    by_v4_path = await fetch(http, f"{fake.url}/fetch/{job_id}", fake)
    assert by_v4_path.json()["status"] == "success"
    assert fake.jobs[job_id].fetches == 3 and len(fake.fetches) == 3


async def test_fetch_errors(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    answer = await submit(http, fake)
    unknown = await fetch(http, fake.fetch_url, fake, request_id=99)
    assert unknown.json() == {"status": "error", "messege": "Request not found"}
    bad_key = await http.post(fake.fetch_url, json={"key": "nope", "request_id": answer["id"]})
    assert bad_key.json()["message"] == "Invalid Api Key"
    missing = await fetch(http, fake.fetch_url, fake)
    assert list(missing.json()["message"]) == ["request_id"]


async def test_failed_after(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("failed_after", polls=1))
    answer = await submit(http, fake)
    assert answer["status"] == "processing"
    statuses = [(await fetch(http, answer["fetch_result"], fake)).json() for _ in range(3)]
    assert [s["status"] for s in statuses] == ["processing", "failed", "failed"]
    assert statuses[1] == {"status": "failed", "id": answer["id"], "message": "Failed, Try Again", "output": ""}
    assert fake.jobs[answer["id"]].state == "failed" and fake.charges == [answer["id"]]
    assert (await http.get(answer["future_links"][0])).status_code == 404


async def test_inject_fetch_is_transient_and_leaves_the_job_alone(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("processing", polls=1))
    answer = await submit(http, fake)
    fake.inject_fetch(kind="http", status=503)
    fake.inject_fetch(Fault("malformed"))
    first = await fetch(http, answer["fetch_result"], fake)
    assert first.status_code == 503 and first.json() == {"status": "error", "message": "Server Error"}
    second = await fetch(http, answer["fetch_result"], fake)
    assert second.status_code == 200
    with pytest.raises(ValueError):
        json.loads(second.text)
    statuses = [(await fetch(http, answer["fetch_result"], fake)).json()["status"] for _ in range(2)]
    assert statuses == ["processing", "success"]  # neither failure used up the poll
    with pytest.raises(ValueError):
        fake.inject_fetch(kind="hang")


async def test_fetch_faults_do_not_touch_submits_and_vice_versa(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("error", message="busy"))
    resp = await fetch(http, fake.fetch_url, fake, request_id=1000)
    assert resp.json()["messege"] == "Request not found"  # the fetch did not take the submit fault
    assert len(fake.faults) == 1
    assert (await submit(http, fake))["message"] == "busy"
    fake.inject_fetch(Fault("http", status=502))
    assert (await submit(http, fake))["status"] == "success"  # the submit did not take the fetch fault
    assert len(fake.fetch_faults) == 1
    assert not fake.faults


# -- submit faults ---------------------------------------------------------------------------------


async def test_error_fault_spellings(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("error", message="Server is busy", misspelled=True))
    fake.inject(Fault("error", message="Out of credits"))
    misspelled = await submit(http, fake)
    assert misspelled == {"status": "error", "messege": "Server is busy"}
    plain = await submit(http, fake)
    assert plain == {"status": "error", "message": "Out of credits"}
    assert fake.charges == []


async def test_429_with_and_without_retry_after(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("http", status=429, retry_after=12))
    fake.inject(Fault("http", status=429))
    first = await http.post(fake.url, json=body(fake))
    assert first.status_code == 429 and first.headers["retry-after"] == "12"
    assert first.json()["message"] == "Rate limit exceeded. Maximum 5 queued requests allowed."
    assert first.json()["status"] == "error"
    second = await http.post(fake.url, json=body(fake))
    assert second.status_code == 429 and "retry-after" not in second.headers
    assert second.json()["retry_after"] == 30
    assert fake.charges == [] and [r.http_status for r in fake.requests] == [429, 429]


async def test_5xx_is_charged_so_a_resubmit_pays_twice(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("http", status=503))
    resp = await http.post(fake.url, json=body(fake))
    assert resp.status_code == 503 and resp.json() == {"status": "error", "message": "Server Error"}
    assert fake.charges == [1000] and fake.jobs[1000].state == "success"
    retry = await submit(http, fake)  # what a client must not do
    assert retry["status"] == "success" and fake.charges == [1000, 1001]


async def test_hang_is_charged_and_close_does_not_wait(http: httpx.AsyncClient) -> None:
    fake = FakeModelsLab()
    await fake.start()
    try:
        fake.inject(Fault("hang", seconds=30))
        with pytest.raises(httpx.TimeoutException):
            await http.post(fake.url, json=body(fake), timeout=0.3)
        assert fake.charges == [1000] and fake.jobs[1000].state == "processing"
        assert fake.requests[0].http_status is None  # still unanswered
        polled = await fetch(http, fake.fetch_url, fake, request_id=1000)
        assert polled.json()["status"] == "processing"
    finally:
        started = time.monotonic()
        await fake.close()
    assert time.monotonic() - started < 5


async def test_malformed_is_charged(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("malformed"))
    resp = await http.post(fake.url, json=body(fake))
    assert resp.status_code == 200 and resp.text == '{"status": "succ'
    with pytest.raises(ValueError):
        resp.json()
    assert fake.charges == [1000] and fake.requests[0].status is None


async def test_url_404(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("url_404"))
    answer = await submit(http, fake)
    assert answer["status"] == "success" and len(answer["output"]) == 1
    assert (await http.get(answer["output"][0])).status_code == 404
    assert fake.downloads == [] and fake.requests[-1].http_status == 404


async def test_partial_output(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("partial", returned=1))
    answer = await submit(http, fake, samples="3")
    assert answer["status"] == "success" and answer["meta"]["n_samples"] == 3
    assert len(answer["output"]) == 1 and len(fake.jobs[1000].urls) == 3
    assert (await http.get(answer["output"][0])).status_code == 200
    assert (await http.get(fake.jobs[1000].urls[2])).status_code == 404


async def test_rejected_request_spends_an_accepting_fault(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("processing"))
    assert (await submit(http, fake, width="2048"))["status"] == "error"
    assert (await submit(http, fake))["status"] == "success"


def test_fault_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault("http", status=404)


# -- recording -------------------------------------------------------------------------------------


async def test_wait_for_and_unknown_routes(fake: FakeModelsLab, http: httpx.AsyncClient) -> None:
    resp = await http.post(f"{fake.base}/api/v6/images/text2img", json=body(fake))
    assert resp.status_code == 404
    await fake.wait_for(lambda: fake.requests and fake.requests[-1].http_status == 404)
    assert fake.requests[0].kind == "other" and fake.requests[0].body["key"] == "<redacted>"
    with pytest.raises(TimeoutError, match="last requests"):
        await fake.wait_for(lambda: fake.charges, timeout=0.1)
