"""Checks FakeRunware with a plain HTTP client (no imagebot code), so client tests can trust it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.runware import COST_PER_CAPTION, COST_PER_IMAGE, COST_PER_UPSCALE, FakeRunware, Fault


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunware]:
    async with FakeRunware() as f:
        yield f


@pytest.fixture
async def http(fake: FakeRunware) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {fake.api_key}"}, timeout=10) as client:
        yield client


def task(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": str(uuid.uuid4()),
        "positivePrompt": "a red fox in the snow",
        "model": "civitai:101055@128078",
        "width": 128,
        "height": 192,
        "steps": 4,
        "seed": 42,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def poll(task_uuid: str) -> dict[str, Any]:
    return {"taskType": "getResponse", "taskUUID": task_uuid}


def colour(seed: int) -> tuple[int, ...]:
    return tuple(hashlib.sha256(f"{seed}".encode()).digest()[:3])


async def post(http: httpx.AsyncClient, fake: FakeRunware, *tasks: dict[str, Any]) -> httpx.Response:
    return await http.post(fake.url, json=list(tasks))


# -- auth and validation ----------------------------------------------------------------------------


async def test_wrong_or_missing_key_is_401_and_key_never_recorded(fake: FakeRunware) -> None:
    async with httpx.AsyncClient() as client:
        missing = await client.post(fake.url, json=[task()])
        wrong = await client.post(fake.url, json=[task()], headers={"Authorization": "Bearer nope"})
        right = await client.post(fake.url, json=[task()], headers={"Authorization": f"Bearer {fake.api_key}"})
    for resp in (missing, wrong):
        assert resp.status_code == 401
        assert resp.json() == {
            "errors": [
                {
                    "code": "invalidApiKey",
                    "message": "Invalid API key.",
                    "parameter": "apiKey",
                    "taskType": None,
                    "taskUUID": None,
                }
            ]
        }
    assert right.status_code == 200
    assert [r.authorized for r in fake.requests] == [False, False, True]
    assert [r.status for r in fake.requests] == [401, 401, 200]
    assert fake.api_key not in repr(fake.requests)
    assert len(fake.charges) == 1 and len(fake.calls("imageInference")) == 3


@pytest.mark.parametrize("body", [b'{"taskType": "imageInference"}', b"not json", b"[]", b"[1, 2]"])
async def test_body_not_an_array_of_objects_is_invalid_payload(
    fake: FakeRunware, http: httpx.AsyncClient, body: bytes
) -> None:
    resp = await http.post(fake.url, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["code"] == "invalidPayload"


@pytest.mark.parametrize(
    ("overrides", "parameter", "code"),
    [
        ({"steps": 500}, "steps", "invalidParameter"),
        ({"width": 100}, "width", "invalidParameter"),
        ({"height": 200}, "height", "invalidParameter"),
        ({"numberResults": True}, "numberResults", "invalidParameter"),
        ({"numberResults": 21}, "numberResults", "invalidParameter"),
        ({"positivePrompt": "a"}, "positivePrompt", "invalidParameter"),
        ({"positivePrompt": ...}, "positivePrompt", "invalidParameter"),
        ({"model": ...}, "model", "invalidParameter"),
        ({"model": "sdxl"}, "model", "invalidParameter"),
        ({"taskUUID": "not-a-uuid"}, "taskUUID", "invalidParameter"),
        ({"taskUUID": str(uuid.uuid1())}, "taskUUID", "invalidParameter"),
        ({"CFGScale": 51}, "CFGScale", "invalidParameter"),
        ({"scheduler": "Euler b"}, "scheduler", "invalidParameter"),
        ({"seed": 0}, "seed", "invalidParameter"),
        ({"outputFormat": "GIF"}, "outputFormat", "invalidParameter"),
        ({"outputType": "url"}, "outputType", "invalidParameter"),
        ({"clipSkip": 3}, "clipSkip", "invalidParameter"),
        ({"deliveryMethod": "later"}, "deliveryMethod", "invalidParameter"),
        ({"includeCost": 1}, "includeCost", "invalidParameter"),
        ({"negativePrompt": None}, "negativePrompt", "invalidParameter"),
        ({"refiner": {"model": "civitai:1@2"}}, "refiner.startStep", "invalidParameter"),
        ({"refiner": {"model": "civitai:1@2", "startStep": 2, "startStepPercentage": 50}}, "refiner.startStep", None),
        ({"refiner": {"model": "civitai:1@2", "startStep": 5}}, "refiner.startStep", "invalidParameter"),
        ({"lora": [{"model": "civitai:1@2", "weight": 5}]}, "lora[0].weight", "invalidParameter"),
        ({"embeddings": [{"weight": 1}]}, "embeddings[0].model", "invalidParameter"),
        ({"guidance": 7}, "guidance", "unsupportedParameter"),
        ({"seedImage": "data:image/png;base64,bm90IGFuIGltYWdl"}, "seedImage", "invalidParameter"),
        ({"seedImage": "data:image/png;base64,%%%"}, "seedImage", "invalidParameter"),
        ({"seedImage": 7}, "seedImage", "invalidParameter"),
        ({"seedImage": "c64351d5-4c59-42f7-95e1-eace013eddab", "strength": 1.2}, "strength", "invalidParameter"),
        ({"seedImage": "c64351d5-4c59-42f7-95e1-eace013eddab", "strength": None}, "strength", "invalidParameter"),
        ({"maskImage": "c64351d5-4c59-42f7-95e1-eace013eddab"}, "seedImage", "invalidParameter"),
        ({"seed_image": "c64351d5-4c59-42f7-95e1-eace013eddab"}, "seed_image", "unsupportedParameter"),
    ],
)
async def test_validation_names_the_first_bad_parameter(
    fake: FakeRunware, http: httpx.AsyncClient, overrides: dict[str, Any], parameter: str, code: str | None
) -> None:
    body = task(**overrides)
    resp = await post(http, fake, body)
    assert resp.status_code == 400
    (error,) = resp.json()["errors"]
    assert error["parameter"] == parameter
    assert error["code"] == (code or "invalidParameter")
    assert error["taskType"] == "imageInference"
    assert error["documentation"] == "https://runware.ai/docs/image-inference/api-reference"
    assert fake.charges == [] and fake.tasks == {}


async def test_full_featured_task_is_accepted(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    body = task(
        negativePrompt="blurry",
        CFGScale=6.5,
        scheduler="DPM++ 2M Karras",
        clipSkip=0,
        vae="civitai:2@3",
        refiner={"model": "civitai:4@5", "startStepPercentage": 80},
        lora=[{"model": "civitai:6@7", "weight": -1.5}],
        embeddings=[{"model": "civitai:8@9"}],
        outputQuality=90,
        deliveryMethod="sync",
        includeCost=False,
    )
    resp = await post(http, fake, body)
    assert resp.status_code == 200, resp.text


def png_data_uri(size: tuple[int, int], mode: str = "RGB") -> tuple[bytes, str]:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data, "data:image/png;base64," + base64.b64encode(data).decode()


async def test_image_inputs_are_decoded_and_steps_run_truncate(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    """seedImage and maskImage as data URIs (or bare base64); the fake runs int(steps × strength), as diffusers does."""
    image, image_uri = png_data_uri((128, 192))
    mask, _ = png_data_uri((128, 192), "L")
    bare = base64.b64encode(mask).decode()
    body = task(seedImage=image_uri, maskImage=bare, strength=0.3, steps=10)
    resp = await post(http, fake, body)
    assert resp.status_code == 200, resp.text
    accepted = fake.tasks[body["taskUUID"]]
    assert (accepted.seed_image, accepted.mask_image) == (image, mask)
    assert accepted.steps_run == 3  # 10 × 0.3 is 3.0000000000000004
    default = task(seedImage="c64351d5-4c59-42f7-95e1-eace013eddab", steps=30, strength=0.25)
    assert (await post(http, fake, default)).status_code == 200
    assert fake.tasks[default["taskUUID"]].steps_run == 7  # 7.5 truncated, where half-up says 8
    assert fake.tasks[default["taskUUID"]].seed_image is None


def upscale(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"taskType": "imageUpscale", "taskUUID": str(uuid.uuid4()), "upscaleFactor": 2}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("overrides", "parameter", "code"),
    [
        ({"inputImage": ...}, "inputImage", "invalidParameter"),
        ({"upscaleFactor": ...}, "upscaleFactor", "invalidParameter"),
        ({"upscaleFactor": 8}, "upscaleFactor", "invalidParameter"),
        ({"upscaleFactor": 2.0}, "upscaleFactor", "invalidParameter"),
        ({"upscaleFactor": True}, "upscaleFactor", "invalidParameter"),
        ({"inputImage": "not an image"}, "inputImage", "invalidParameter"),
        ({"inputImage": "https://example.com/a.png"}, "inputImage", "invalidParameter"),
        ({"inputImage": "c64351d5-4c59-42f7-95e1-eace013eddab"}, "inputImage", "invalidParameter"),
        ({"steps": 20}, "steps", "unsupportedParameter"),
        ({"safety": {"checkContent": "yes"}}, "safety.checkContent", "invalidParameter"),
    ],
)
async def test_an_upscale_task_is_validated_like_the_docs_say(
    fake: FakeRunware, http: httpx.AsyncClient, overrides: dict[str, Any], parameter: str, code: str
) -> None:
    _, image_uri = png_data_uri((64, 96))
    resp = await post(http, fake, upscale(**({"inputImage": image_uri} | overrides)))
    assert resp.status_code == 400
    (error,) = resp.json()["errors"]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "imageUpscale")
    assert fake.charges == []


async def test_an_upscale_enlarges_the_input_once_and_a_resend_conflicts(
    fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    image, image_uri = png_data_uri((64, 96))
    body = upscale(inputImage=image_uri, upscaleFactor=3, outputFormat="PNG", includeCost=True)
    resp = await post(http, fake, body)
    assert resp.status_code == 200, resp.text
    (item,) = resp.json()["data"]
    assert item["taskType"] == "imageUpscale" and item["cost"] == COST_PER_UPSCALE and "seed" not in item
    assert fake.tasks[body["taskUUID"]].input_image == image
    larger = Image.open(io.BytesIO((await http.get(item["imageURL"])).content))
    assert larger.size == (192, 288)
    assert (await post(http, fake, body)).json()["errors"][0]["code"] == "conflictTaskUUID"
    # a generated image is upscaled by its UUID too
    again = upscale(inputImage=item["imageUUID"], upscaleFactor=2)
    assert (await post(http, fake, again)).status_code == 200
    assert fake.tasks[again["taskUUID"]].input_image == (await http.get(item["imageURL"])).content
    assert fake.charges == [(body["taskUUID"], COST_PER_UPSCALE), (again["taskUUID"], COST_PER_UPSCALE)]


# -- imageCaption ---------------------------------------------------------------------------------------


def caption(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"taskType": "imageCaption", "taskUUID": str(uuid.uuid4())}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def picture(size: tuple[int, int], colour: str, strip: str | None = None) -> bytes:
    """A PNG of one colour, with a strip of another over its top quarter."""
    image = Image.new("RGB", size, colour)
    if strip is not None:
        image.paste(strip, (0, 0, size[0], size[1] // 4))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def as_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.mark.parametrize(
    ("overrides", "parameter", "code"),
    [
        ({"inputImage": ...}, "inputImage", "invalidParameter"),
        ({"inputImage": None}, "inputImage", "invalidParameter"),
        ({"inputImage": "not an image"}, "inputImage", "invalidParameter"),
        ({"inputImage": "https://example.com/a.png"}, "inputImage", "invalidParameter"),
        ({"inputImage": "c64351d5-4c59-42f7-95e1-eace013eddab"}, "inputImage", "invalidParameter"),
        ({"includeCost": 1}, "includeCost", "invalidParameter"),
        ({"taskUUID": "not-a-uuid"}, "taskUUID", "invalidParameter"),
        ({"outputType": "URL"}, "outputType", "unsupportedParameter"),
        ({"image": "x"}, "image", "unsupportedParameter"),
    ],
)
async def test_a_caption_task_is_validated_as_the_sdk_types_have_it(
    fake: FakeRunware, http: httpx.AsyncClient, overrides: dict[str, Any], parameter: str, code: str
) -> None:
    """The SDK's IImageCaption: an inputImage (data or a kept image's UUID) and includeCost; nothing else."""
    resp = await post(http, fake, caption(**({"inputImage": as_data_uri(picture((64, 64), "red"))} | overrides)))
    assert resp.status_code == 400
    (error,) = resp.json()["errors"]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "imageCaption")
    assert fake.charges == [] and fake.captions == {}


async def test_a_caption_tells_the_image_received_and_is_charged_once(
    fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    """Its size and main colour, as the SDK's IImageToText answers it; a resent taskUUID conflicts, uncharged."""
    red = picture((64, 64), "red")
    body = caption(inputImage=as_data_uri(red), includeCost=True)
    resp = await post(http, fake, body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "data": [
            {
                "taskType": "imageCaption",
                "taskUUID": body["taskUUID"],
                "text": "a 64×64 picture, mostly red",
                "cost": COST_PER_CAPTION,
            }
        ]
    }
    assert fake.captions[body["taskUUID"]].input_image == red
    # bare base64, without includeCost: no cost in the answer; a strip of red does not outweigh the blue
    bare = caption(inputImage=base64.b64encode(picture((96, 32), "blue", strip="red")).decode())
    (item,) = (await post(http, fake, bare)).json()["data"]
    assert item["text"] == "a 96×32 picture, mostly blue" and "cost" not in item
    again = await post(http, fake, body)
    assert again.status_code == 400 and again.json()["errors"][0]["code"] == "conflictTaskUUID"
    assert fake.charges == [(body["taskUUID"], COST_PER_CAPTION), (bare["taskUUID"], COST_PER_CAPTION)]


async def test_an_uploaded_image_is_captioned_by_its_uuid(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    white = picture((32, 48), "white")
    upload = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": as_data_uri(white)}
    (uploaded,) = (await post(http, fake, upload)).json()["data"]
    body = caption(inputImage=uploaded["imageUUID"])
    (item,) = (await post(http, fake, body)).json()["data"]
    assert item["text"] == "a 32×48 picture, mostly white"
    assert fake.captions[body["taskUUID"]].input_image == white
    assert fake.charges == [(body["taskUUID"], COST_PER_CAPTION)]  # the upload is free


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault("error400", parameter="inputImage", message="Unreadable image."), 400, "invalidParameter"),
        (Fault("error200", parameter="inputImage"), 200, "invalidParameter"),
        (Fault("status", status=429, retry_after=1), 429, "rateLimitExceeded"),
        (Fault("status", status=402), 402, "insufficientCredits"),
        (Fault("hang_before", seconds=0.05), 503, "serviceUnavailable"),
    ],
)
async def test_a_refusing_fault_refuses_a_caption_uncharged(
    fake: FakeRunware, http: httpx.AsyncClient, fault: Fault, status: int, code: str
) -> None:
    fake.inject(fault)
    body = caption(inputImage=as_data_uri(picture((64, 64), "red")))
    resp = await post(http, fake, body)
    assert resp.status_code == status
    (error,) = resp.json()["errors"]
    assert (error["code"], error["taskType"], error["taskUUID"]) == (code, "imageCaption", body["taskUUID"])
    assert fake.charges == [] and fake.captions == {} and not fake.faults
    assert (await post(http, fake, body)).status_code == 200  # refused, so its taskUUID is still free


async def test_accepting_faults_spoil_a_charged_caption_answer(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    """Unreadable, of another shape, or too late: Runware captioned (and charged) it all the same."""
    image = as_data_uri(picture((64, 64), "green"))
    fake.inject(Fault("malformed"))
    assert (await post(http, fake, caption(inputImage=image))).text == '{"data": ['
    fake.inject(Fault("wrong_shape", mangle=lambda answer: {"data": [{**answer["data"][0], "text": None}]}))
    (item,) = (await post(http, fake, caption(inputImage=image))).json()["data"]
    assert item["text"] is None
    fake.inject(Fault("hang_after", seconds=0.5))
    with pytest.raises(httpx.TimeoutException):
        await http.post(fake.url, json=[caption(inputImage=image)], timeout=0.1)
    await fake.wait_for(lambda: len(fake.charges) == 3)
    assert [c.text for c in fake.captions.values()] == ["a 64×64 picture, mostly green"] * 3


async def test_a_caption_leaves_the_faults_only_images_have_for_the_next_inference(
    fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    fake.inject(Fault("url_404"))
    (item,) = (await post(http, fake, caption(inputImage=as_data_uri(picture((64, 64), "red"))))).json()["data"]
    assert item["text"] == "a 64×64 picture, mostly red" and len(fake.faults) == 1
    (image,) = (await post(http, fake, task())).json()["data"]
    assert (await http.get(image["imageURL"])).status_code == 404 and not fake.faults


async def test_a_caption_mixed_with_an_inference_in_one_post_is_refused(
    fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    """The fake answers caption tasks in a POST of their own, as the client sends them."""
    resp = await post(http, fake, task(), caption(inputImage=as_data_uri(picture((64, 64), "red"))))
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "unsupportedTaskType"
    assert fake.charges == []


# -- sync delivery ------------------------------------------------------------------------------------


async def test_sync_png_urls_download_with_the_requested_size_and_seeds(
    fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    body = task(numberResults=2, outputFormat="PNG", includeCost=True, checkNSFW=True)
    resp = await post(http, fake, body)
    assert resp.status_code == 200
    items = resp.json()["data"]
    assert [i["seed"] for i in items] == [42, 43]
    assert {i["taskUUID"] for i in items} == {body["taskUUID"]}
    assert all(i["taskType"] == "imageInference" and i["NSFWContent"] is False for i in items)
    assert all(i["cost"] == COST_PER_IMAGE for i in items)
    assert len({i["imageUUID"] for i in items}) == 2
    for item in items:
        assert item["imageURL"].startswith(fake.base + "/image/") and item["imageURL"].endswith(".png")
        got = await http.get(item["imageURL"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(got.content))
        assert picture.format == "PNG" and picture.size == (128, 192)
        assert picture.getpixel((0, 0)) == colour(item["seed"])
    assert fake.charges == [(body["taskUUID"], pytest.approx(2 * COST_PER_IMAGE))]
    recorded = fake.tasks[body["taskUUID"]]
    assert recorded.posts == 1 and recorded.request == body and len(recorded.images) == 2
    assert fake.downloads == [i["imageURL"].rsplit("/", 1)[1] for i in items]


async def test_defaults_jpg_without_cost_or_nsfw_fields(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    resp = await post(http, fake, task(seed=...))
    (item,) = resp.json()["data"]
    assert "cost" not in item and "NSFWContent" not in item
    assert item["imageURL"].endswith(".jpg") and 1 <= item["seed"] < 2**32
    got = await http.get(item["imageURL"])
    assert got.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(got.content)).format == "JPEG"


async def test_base64_and_data_uri_outputs(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    resp = await post(http, fake, task(outputType="base64Data", outputFormat="WEBP"))
    (item,) = resp.json()["data"]
    assert "imageURL" not in item
    picture = Image.open(io.BytesIO(base64.b64decode(item["imageBase64Data"])))
    assert picture.format == "WEBP" and picture.size == (128, 192)

    resp = await post(http, fake, task(outputType="dataURI", outputFormat="PNG", seed=7))
    (item,) = resp.json()["data"]
    prefix = "data:image/png;base64,"
    assert item["imageDataURI"].startswith(prefix)
    picture = Image.open(io.BytesIO(base64.b64decode(item["imageDataURI"].removeprefix(prefix))))
    assert picture.getpixel((5, 5)) == colour(7)


async def test_service_time_delays_the_sync_answer(http: httpx.AsyncClient) -> None:
    async with FakeRunware(api_key="rw-test-key", service_time=0.2) as slow:
        started = asyncio.get_running_loop().time()
        resp = await post(http, slow, task())
        assert resp.status_code == 200
        assert asyncio.get_running_loop().time() - started >= 0.2


async def test_resend_is_conflict_and_not_charged_again(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    body = task()
    assert (await post(http, fake, body)).status_code == 200
    resp = await post(http, fake, body)
    assert resp.status_code == 400
    assert resp.json() == {
        "errors": [
            {
                "code": "conflictTaskUUID",
                "message": "A task with this taskUUID already exists.",
                "parameter": "taskUUID",
                "taskType": "imageInference",
                "taskUUID": body["taskUUID"],
            }
        ]
    }
    assert len(fake.charges) == 1 and fake.tasks[body["taskUUID"]].posts == 2


async def test_several_tasks_in_one_post_are_each_answered(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    first, second = task(seed=1), task(seed=100, numberResults=2)
    resp = await post(http, fake, first, second)
    assert [i["seed"] for i in resp.json()["data"]] == [1, 100, 101]
    assert [c for _, c in fake.charges] == [pytest.approx(COST_PER_IMAGE), pytest.approx(2 * COST_PER_IMAGE)]


# -- getResponse ----------------------------------------------------------------------------------------


async def test_get_response_of_unknown_task_is_not_found(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    resp = await post(http, fake, poll(missing))
    assert resp.status_code == 400
    (error,) = resp.json()["errors"]
    assert error["code"] == "taskNotFound" and error["parameter"] == "taskUUID" and error["taskUUID"] == missing


async def test_get_response_in_the_same_post_and_no_charge(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    body = task()
    resp = await post(http, fake, body, poll(body["taskUUID"]))
    data = resp.json()["data"]
    assert len(data) == 2 and data[1]["status"] == "success" and data[0]["imageUUID"] == data[1]["imageUUID"]
    assert len(fake.charges) == 1 and fake.tasks[body["taskUUID"]].polls == 1


async def test_async_delivery_with_processing_polls(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("processing", polls=2))
    body = task(deliveryMethod="async", numberResults=2)
    resp = await post(http, fake, body)
    assert resp.json() == {"data": [{"taskType": "imageInference", "taskUUID": body["taskUUID"]}]}
    for _ in range(2):
        got = (await post(http, fake, poll(body["taskUUID"]))).json()
        assert got == {"data": [{"taskType": "imageInference", "taskUUID": body["taskUUID"], "status": "processing"}]}
    done = (await post(http, fake, poll(body["taskUUID"]))).json()
    assert [i["status"] for i in done["data"]] == ["success", "success"]
    assert [i["seed"] for i in done["data"]] == [42, 43] and "errors" not in done
    assert len(fake.charges) == 1 and len(fake.calls("getResponse")) == 3


async def test_async_delivery_is_ready_after_service_time(http: httpx.AsyncClient) -> None:
    async with FakeRunware(service_time=0.3) as slow:
        body = task(deliveryMethod="async")
        resp = await post(http, slow, body)
        assert resp.json()["data"][0] == {"taskType": "imageInference", "taskUUID": body["taskUUID"]}
        first = (await post(http, slow, poll(body["taskUUID"]))).json()
        assert first["data"][0]["status"] == "processing"
        await asyncio.sleep(0.35)
        later = (await post(http, slow, poll(body["taskUUID"]))).json()
        assert later["data"][0]["status"] == "success" and "imageURL" in later["data"][0]


# -- faults ----------------------------------------------------------------------------------------------


async def test_status_429_with_retry_after_charges_nothing(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("status", status=429, retry_after=2))
    body = task()
    resp = await post(http, fake, body)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    (error,) = resp.json()["errors"]
    assert error["code"] == "rateLimitExceeded" and error["taskUUID"] == body["taskUUID"]
    assert fake.charges == [] and not fake.faults
    assert (await post(http, fake, body)).status_code == 200  # the fault is spent; the same UUID goes through
    assert len(fake.charges) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, "serviceUnavailable"),
        (502, "serviceUnavailable"),
        (504, "serviceUnavailable"),
        (402, "insufficientCredits"),
        (403, "forbidden"),
        (408, "requestTimeout"),
    ],
)
async def test_status_codes(fake: FakeRunware, http: httpx.AsyncClient, status: int, code: str) -> None:
    fake.inject(Fault("status", status=status))
    resp = await post(http, fake, task())
    assert resp.status_code == status and resp.json()["errors"][0]["code"] == code
    assert "Retry-After" not in resp.headers and fake.charges == []


async def test_hang_before_answers_503_late_without_charge(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("hang_before", seconds=0.2))
    started = asyncio.get_running_loop().time()
    resp = await post(http, fake, task())
    assert resp.status_code == 503 and resp.json()["errors"][0]["code"] == "serviceUnavailable"
    assert asyncio.get_running_loop().time() - started >= 0.2
    assert fake.charges == [] and fake.tasks == {}


async def test_error400_fault(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("error400", parameter="positivePrompt", message="Prompt rejected."))
    resp = await post(http, fake, task())
    assert resp.status_code == 400
    (error,) = resp.json()["errors"]
    assert (error["code"], error["parameter"], error["message"]) == (
        "invalidParameter",
        "positivePrompt",
        "Prompt rejected.",
    )
    assert fake.charges == []


async def test_hang_after_then_retry_conflicts_and_get_response_has_results(
    fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    fake.inject(Fault("hang_after", seconds=0.5))
    body = task(numberResults=2)
    with pytest.raises(httpx.TimeoutException):
        await http.post(fake.url, json=[body], timeout=0.1)
    # On a busy machine the client may give up before the fake has read the POST: it is charged then.
    await fake.wait_for(lambda: fake.charges)
    assert fake.charges == [(body["taskUUID"], pytest.approx(2 * COST_PER_IMAGE))]
    retry = await post(http, fake, body)
    assert retry.status_code == 400 and retry.json()["errors"][0]["code"] == "conflictTaskUUID"
    got = (await post(http, fake, poll(body["taskUUID"]))).json()
    assert [i["status"] for i in got["data"]] == ["success", "success"]
    assert len(fake.charges) == 1 and fake.tasks[body["taskUUID"]].posts == 2
    assert fake.max_concurrent >= 1


async def test_partial_answer_rest_via_get_response(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("partial", returned=1))
    body = task(numberResults=3)
    first = (await post(http, fake, body)).json()["data"]
    assert [i["seed"] for i in first] == [42]
    got = (await post(http, fake, poll(body["taskUUID"]))).json()
    assert [i["seed"] for i in got["data"]] == [42, 43, 44] and "errors" not in got
    assert got["data"][0]["imageUUID"] == first[0]["imageUUID"]
    assert fake.charges == [(body["taskUUID"], pytest.approx(3 * COST_PER_IMAGE))]


async def test_lost_partial_reports_timeout_provider(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("partial", returned=1, lost=True))
    body = task(numberResults=3)
    assert len((await post(http, fake, body)).json()["data"]) == 1
    resp = await post(http, fake, poll(body["taskUUID"]))
    assert resp.status_code == 200
    got = resp.json()
    assert [i["seed"] for i in got["data"]] == [42]
    assert (
        got["errors"]
        == [
            {
                "code": "timeoutProvider",
                "message": "The provider timed out.",
                "status": "error",
                "taskUUID": body["taskUUID"],
                "taskType": "imageInference",
            }
        ]
        * 2
    )
    assert len(fake.charges) == 1


async def test_url_404(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("url_404"))
    (item,) = (await post(http, fake, task())).json()["data"]
    assert (await http.get(item["imageURL"])).status_code == 404
    assert fake.downloads == [] and fake.requests[-1].status == 404
    (ok,) = (await post(http, fake, task())).json()["data"]  # only that task's URLs are broken
    assert (await http.get(ok["imageURL"])).status_code == 200


async def test_malformed_body_is_charged(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    fake.inject(Fault("malformed"))
    body = task()
    resp = await post(http, fake, body)
    assert resp.status_code == 200 and resp.text == '{"data": ['
    with pytest.raises(ValueError):
        resp.json()
    assert len(fake.charges) == 1
    assert (await post(http, fake, poll(body["taskUUID"]))).json()["data"][0]["status"] == "success"


async def test_faults_are_fifo_and_wait_for_an_accepted_post(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    done = task()
    assert (await post(http, fake, done)).status_code == 200
    fake.inject(Fault("partial", returned=0), Fault("status", status=503))
    assert (await post(http, fake, poll(done["taskUUID"]))).status_code == 200  # polls take no fault
    assert (await post(http, fake, done)).json()["errors"][0]["code"] == "conflictTaskUUID"
    assert (await post(http, fake, task(steps=0))).status_code == 400
    assert len(fake.faults) == 2  # rejected POSTs left the accepting fault in place
    assert (await post(http, fake, task())).json()["data"] == []
    assert (await post(http, fake, task())).status_code == 503
    assert (await post(http, fake, task())).status_code == 200


async def test_fault_kind_is_checked() -> None:
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]


# -- concurrency and records ---------------------------------------------------------------------------


async def test_hundreds_of_concurrent_posts_over_reused_connections() -> None:
    async with FakeRunware(service_time=0.1) as fake:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
            bodies = [task() for _ in range(200)]
            resps = await asyncio.gather(*(client.post(fake.url, json=[b]) for b in bodies))
        assert all(r.status_code == 200 for r in resps)
        assert len(fake.charges) == 200 and len(fake.tasks) == 200
        assert 1 < fake.max_concurrent <= 50
        # Pools may recycle a few connections under load; reuse still means far fewer than requests.
        assert 1 <= fake.connections < 100
        assert fake.in_flight == 0


async def test_connections_count_distinct_client_connections(fake: FakeRunware) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with httpx.AsyncClient(headers=headers) as client:
        for _ in range(3):
            assert (await client.post(fake.url, json=[task()])).status_code == 200
    assert fake.connections == 1
    async with httpx.AsyncClient(headers=headers) as client:
        await client.post(fake.url, json=[task()])
    assert fake.connections == 2


async def test_wait_for_and_request_records(fake: FakeRunware, http: httpx.AsyncClient) -> None:
    sent = asyncio.create_task(post(http, fake, task()))
    await fake.wait_for(lambda: fake.charges)
    await sent
    record = fake.requests[0]
    assert (record.method, record.path, record.status) == ("POST", "/v1", 200)
    assert "authorization" not in {k.lower() for k in record.headers}
    assert record.answered_at is not None and record.answered_at >= record.at
    assert record.tasks == fake.calls("imageInference")
    with pytest.raises(TimeoutError, match="last requests"):
        await fake.wait_for(lambda: len(fake.charges) > 1, timeout=0.05)
