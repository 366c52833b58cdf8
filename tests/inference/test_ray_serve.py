"""Ray Serve: a local Ray instance (2 CPUs) with two CPU replicas of the tiny model, driven through `RayBackend`.

One Serve application for the whole module: starting Ray and two replicas (each
importing torch) takes most of the module's time.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from bot.catalog import load_catalog
from bot.errors import BackendUnavailable, InvalidOption, JobCancelled
from bot.request import Progress
from inference.local import LocalBackend
from tests.inference.tiny_requests import tiny_request

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from inference.local._job import build_job  # noqa: E402
from inference.local._protocol import Error, Result  # noqa: E402
from inference.ray_serve import RayBackend, app_builder, assets_id  # noqa: E402

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray-serve.yaml"
APP = "imagebot-test"


@pytest.fixture(scope="module")
def cluster(tiny_data_dir: Path) -> Iterator[None]:
    """A local Ray instance with the imagebot application on two CPU replicas."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(proxy_location="Disabled")
        app = app_builder(
            {"data_dir": str(tiny_data_dir), "device": "cpu", "num_gpus": 0, "num_replicas": 2, "max_batch": 4}
        )
        serve.run(app, name=APP, route_prefix=None)
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(cluster: None, tiny_data_dir: Path) -> AsyncIterator[RayBackend]:
    backend = RayBackend(load_catalog(), tiny_data_dir, address=None, app_name=APP)
    await backend.start()
    yield backend
    await backend.aclose()


async def replica_stats(*pids: int) -> dict[int, dict]:
    """Ask replicas for their stats until each of `pids` answered (Serve picks which replica answers a call)."""
    handle = serve.get_app_handle(APP)
    seen: dict[int, dict] = {}
    for _ in range(600):
        stats = await handle.stats.remote()
        seen[stats["pid"]] = stats
        if set(pids) <= set(seen):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"replicas {sorted(set(pids) - set(seen))} did not answer")


async def test_an_image_is_the_one_the_local_worker_makes(backend, tiny_data_dir):
    """Same request, same seed: the replica's PNG has the bytes the local worker process makes."""
    request = tiny_request(seed=4242, refiner={"model": "tiny-refiner", "start_percent": 75})
    events: list[Progress] = []
    images = await backend.generate(request, on_progress=events.append)
    local = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    try:
        expected = await local.generate(request)
    finally:
        await local.aclose()
    assert [image.data for image in images] == [image.data for image in expected]
    assert images[0].seed == 4242 and images[0].meta["base_steps"] == 3 and images[0].meta["refiner_steps"] == 1
    assert [(e.stage, e.step, e.total) for e in events] == [
        ("base", 1, 3),
        ("base", 2, 3),
        ("base", 3, 3),
        ("refiner", 1, 1),
    ]


async def test_jobs_spread_over_both_replicas_and_are_batched(backend):
    """Twelve jobs at once, more than one replica takes (8): both make images, batched, each with its seed."""
    seeds = list(range(500, 512))
    results = await asyncio.gather(*(backend.generate(tiny_request(seed=seed, steps=4)) for seed in seeds))
    assert [images[0].seed for images in results] == seeds
    assert len({images[0].meta["replica"] for images in results}) == 2
    assert max(images[0].meta.get("batch", 1) for images in results) >= 2
    assert len({images[0].data for images in results}) == len(seeds)


async def test_a_batched_image_matches_the_one_made_alone(backend):
    """A job batched with others is the image it is alone (within the batched-arithmetic bound)."""
    import io

    import numpy as np
    from PIL import Image

    alone = (await backend.generate(tiny_request(seed=77, steps=5)))[0]
    together = await asyncio.gather(*(backend.generate(tiny_request(seed=seed, steps=5)) for seed in (77, 78, 79, 80)))
    batched = next(images[0] for images in together if images[0].seed == 77)
    a = np.asarray(Image.open(io.BytesIO(alone.data)), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(batched.data)), dtype=np.int16)
    assert np.abs(a - b).max() <= 1 and np.count_nonzero(a != b) <= a.size // 1000


async def test_cancel_stops_the_replica_at_its_next_step(backend):
    """A cancelled job raises JobCancelled, and its replica stops the pipeline instead of finishing 100 steps."""
    cancel = asyncio.Event()

    def cancel_at_step_3(event: Progress) -> None:
        if event.step == 3:
            cancel.set()

    with pytest.raises(JobCancelled):
        await backend.generate(tiny_request(seed=5, steps=100), on_progress=cancel_at_step_3, cancel=cancel)
    pid = backend.replica_pid
    for _ in range(100):
        stats = (await replica_stats(pid))[pid]
        if any(run["outcome"] == "cancelled" for run in stats["runs"]):
            break
        await asyncio.sleep(0.1)
    cancelled = [run for run in stats["runs"] if run["outcome"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["steps"] < 50


async def test_a_replica_loads_a_lora_once_and_the_id_names_the_weights(backend, tiny_data_dir):
    """The multiplexed id depends on the weights, not their strength; a LoRA is loaded once per replica."""
    catalog = load_catalog()
    plain = build_job(tiny_request(), catalog, tiny_data_dir)
    strong = build_job(tiny_request(loras=[{"name": "tiny-lora", "weight": 1.5}]), catalog, tiny_data_dir)
    weak = build_job(tiny_request(loras=[{"name": "tiny-lora", "weight": 0.3}]), catalog, tiny_data_dir)
    assert assets_id(strong) == assets_id(weak) != assets_id(plain)
    replicas = set()
    for weight in (1.5, 0.3, 0.8):
        images = await backend.generate(tiny_request(loras=[{"name": "tiny-lora", "weight": weight}]))
        replicas.add(images[0].meta["replica"])
    stats = await replica_stats(*replicas)
    assert [stats[pid]["loads"]["lora"] for pid in sorted(replicas)] == [1] * len(replicas)


async def test_the_bot_generates_and_refines_on_the_cluster(cluster, tmp_path, monkeypatch):
    """IMAGEBOT_BACKEND=ray: /imagine and refine go through the service to the replicas; seeds and files stored."""
    from bot.config import CoreSettings, QueueSettings
    from bot.jobs import Requester
    from imagebot.bootstrap import bootstrap

    monkeypatch.setenv("IMAGEBOT_RAY_APP_NAME", APP)
    core = CoreSettings(backend="ray", data_dir=tmp_path, default_model="tiny")
    app = await bootstrap(core, QueueSettings(), announce=lambda _: None)
    try:
        assert app.backend.name == "ray"
        who = Requester(platform="console", user_id="alice")
        first = await (await app.service.imagine("a red fox --seed 7 --steps 4 --size 128x128", who)).result()
        refined = await (await app.service.refine(who, first.id, 50)).result()
        assert (first.seed, refined.seed) == (7, 7)
        assert refined.request.split == (2, 2)
        for generation in (first, refined):
            stored = tmp_path / generation.images[0].path
            assert stored.read_bytes().startswith(b"\x89PNG")
    finally:
        await app.aclose()


async def test_doctor_finds_the_application_and_its_replicas(cluster, monkeypatch):
    """imagebot doctor with IMAGEBOT_BACKEND=ray: the running application passes, a missing one is the fix."""
    from bot.config import CoreSettings
    from inference.plugins import ray

    monkeypatch.setenv("IMAGEBOT_RAY_APP_NAME", APP)
    (found,) = await ray.checks(load_catalog(), CoreSettings(), running=True)
    assert found.detail == f"'{APP}' is running on 2 replicas"
    monkeypatch.setenv("IMAGEBOT_RAY_APP_NAME", "nothing-here")
    (missing,) = await ray.checks(load_catalog(), CoreSettings(), running=True)
    assert not missing.ok
    assert (
        missing.detail == "the cluster has no 'nothing-here' Serve application; deploy it with deploy/ray-serve.yaml."
    )


async def test_an_unknown_name_is_refused_before_anything_is_sent(backend):
    """Catalog errors are the user's sentence, raised on the bot side."""
    with pytest.raises(InvalidOption):
        await backend.generate(tiny_request(loras=[{"name": "no-such-lora", "weight": 1}]))


async def test_a_missing_application_is_one_sentence(cluster, tiny_data_dir):
    """A bot pointed at an application that is not deployed says so."""
    missing = RayBackend(load_catalog(), tiny_data_dir, address=None, app_name="nothing-here")
    with pytest.raises(BackendUnavailable) as refused:
        await missing.generate(tiny_request())
    assert "no 'nothing-here' Serve application is running on the Ray cluster" in str(refused.value)


async def test_the_deploy_config_is_a_valid_serve_config_for_this_module():
    """deploy/ray-serve.yaml passes Serve's own schema and builds with app_builder."""
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (application,) = config.applications
    assert application.import_path == "inference.ray_serve:app_builder"
    app_builder(application.args)


async def test_a_killed_replica_loses_its_job_to_the_other_one(backend):
    """kill -9 of the replica making a job: the job finishes on another replica, same bytes, with a note."""
    expected = (await backend.generate(tiny_request(seed=31, steps=40)))[0]
    killed: list[int] = []

    def kill_on_second_step(event: Progress) -> None:
        if event.step == 2 and not killed and backend.replica_pid is not None:
            killed.append(backend.replica_pid)
            os.kill(backend.replica_pid, signal.SIGKILL)

    retries = backend.retries
    image = (await backend.generate(tiny_request(seed=31, steps=40), on_progress=kill_on_second_step))[0]
    assert killed and image.meta["replica"] != killed[0]
    assert image.data == expected.data
    assert image.meta["note"] == "The worker stopped unexpectedly; it was restarted and this is the second try."
    assert backend.retries == retries + 1


async def test_a_replica_out_of_gpu_memory_answers_oom_and_fails_its_health_check(tiny_data_dir, monkeypatch):
    """The replica's pipeline thread (no Serve): an OOM becomes the 'oom' frame, and Serve's health check fails."""
    import torch
    from diffusers import UNet2DConditionModel

    from inference.ray_serve import ImageWorker, _Request

    replica = ImageWorker.func_or_class(str(tiny_data_dir), "cpu", "float32", 1, 0.0)
    job = build_job(tiny_request(seed=3), load_catalog(), tiny_data_dir)
    frames: list = []
    replica._run_group([_Request(job, frames.append)])
    assert isinstance(frames[-1], Result) and len(frames[-1].results[0]) == 1
    replica.check_health()

    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(UNet2DConditionModel, "forward", out_of_memory)
    frames.clear()
    replica._run_group([_Request(job, frames.append)])
    assert frames == [Error(0, "oom", "the GPU ran out of memory", restart=True)]
    with pytest.raises(RuntimeError, match="suspect after oom"):
        replica.check_health()


async def test_a_replica_whose_pipeline_hangs_fails_its_health_check(tiny_data_dir, monkeypatch):
    """A pipeline call stuck in a step (a hung kernel) fails the health check after the stall timeout."""
    import threading

    from diffusers import UNet2DConditionModel

    from inference.ray_serve import ImageWorker, _Request

    replica = ImageWorker.func_or_class(str(tiny_data_dir), "cpu", "float32", 1, 0.0, stall_timeout_s=1.0)
    job = build_job(tiny_request(seed=3, steps=3), load_catalog(), tiny_data_dir)
    frames: list = []
    replica._run_group([_Request(job, frames.append)])  # loads the model: the hang below is in a step
    forward, release, calls = UNet2DConditionModel.forward, threading.Event(), []

    def hang_on_the_second_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            release.wait(30)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", hang_on_the_second_step)
    request = _Request(job, frames.append)
    runner = threading.Thread(target=replica._run_group, args=([request],))
    runner.start()
    try:
        while len(calls) < 2:
            await asyncio.sleep(0.01)
        replica.check_health()  # a step was made just now
        await asyncio.sleep(1.5)
        with pytest.raises(RuntimeError, match=r"made no progress for 1 s"):
            replica.check_health()
    finally:
        release.set()
        runner.join()
    replica.check_health()  # nothing runs: healthy again


async def test_input_images_and_guides_travel_with_the_job(backend, tiny_data_dir, tmp_path):
    """Image-to-image, a ControlNet and an IP-Adapter on the cluster, the bot's inputs in a folder the
    replicas do not share: the bytes travel, land content-addressed under the replica's data dir,
    and the image is the one the local worker makes from the same files."""
    from PIL import Image

    from bot.request import ControlNetSpec
    from tests.inference.test_local_image_inputs import gradient, store_input

    bot_dir = tmp_path / "bot"
    init = store_input(bot_dir, gradient().rotate(90))  # an image no other test stores
    guide = store_input(bot_dir, Image.new("RGB", (128, 128), (250, 10, 10)))
    image_prompt = store_input(bot_dir, Image.new("RGB", (80, 120), (10, 250, 10)))
    assert not any((tiny_data_dir / "inputs").rglob(f"{init}.png"))  # only the bot has it
    remote = RayBackend(load_catalog(), bot_dir, address=None, app_name=APP)
    request = tiny_request(
        seed=77,
        steps=8,
        init_image=init,
        strength=0.5,
        controlnets=(
            ControlNetSpec(model="tiny-controlnet", guide=guide, start_step=1, end_step=2),
            ControlNetSpec(model="tiny-ip-adapter", guide=image_prompt, weight=0.7, start_step=2, end_step=4),
        ),
    )
    await remote.start()
    try:
        images = await remote.generate(request)
    finally:
        await remote.aclose()
    for sha in (init, guide, image_prompt):
        copy = tiny_data_dir / "inputs" / sha[:2] / f"{sha}.png"
        assert copy.read_bytes() == (bot_dir / "inputs" / sha[:2] / f"{sha}.png").read_bytes()
    local = LocalBackend(load_catalog(), tiny_data_dir, device="cpu")
    try:
        expected = await local.generate(request)
    finally:
        await local.aclose()
    assert images[0].data == expected[0].data
    assert images[0].meta["base_steps"] == 4  # 8 steps at strength 0.5
    assert images[0].meta["controlnet_steps"] == [[1, 2], [2, 4]]


async def test_controlnets_count_in_the_multiplexed_id(tiny_data_dir):
    """Jobs with a ControlNet go to replicas that hold it; its guide, weight and steps do not matter."""
    from bot.request import ControlNetSpec

    catalog = load_catalog()
    guide_a, guide_b = "a" * 64, "b" * 64

    def job(**fields):
        return build_job(tiny_request(**fields), catalog, tiny_data_dir)

    def control(model, guide, weight=1.0):
        return (ControlNetSpec(model=model, guide=guide, weight=weight, end_step=4),)

    plain = job()
    first = job(controlnets=control("tiny-controlnet", guide_a))
    assert assets_id(first) == assets_id(job(controlnets=control("tiny-controlnet", guide_b, 0.5))) != assets_id(plain)
    assert assets_id(job(controlnets=control("canny-sdxl", guide_a))) != assets_id(first)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("inputs/00/" + "0" * 64 + ".png", b"not the bytes of that name"),
        ("../../etc/passwd", b"x"),
        ("inputs/ab/../../../x.png", b"x"),
    ],
)
async def test_a_replica_refuses_inputs_that_are_not_content_addressed(tmp_path, name, data):
    """Nothing sent with a job lands outside the inputs folder or passes for another image."""
    from inference.ray_serve import localize

    job = build_job(tiny_request(), load_catalog(), tmp_path)
    with pytest.raises(ValueError, match="content-addressed"):
        localize(job, {name: data}, tmp_path / "replica")
    assert not (tmp_path / "replica").exists()


async def test_a_replica_checks_a_users_input_images_with_its_checker(backend):
    """Uploads are checked on the cluster too: the tiny checker's verdicts; a checker that cannot run is a sentence."""
    import io

    from PIL import Image

    from bot.ports import ImageCheckingBackend

    assert isinstance(backend, ImageCheckingBackend)  # so a server that withholds flagged images has uploads checked
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
    image = buffer.getvalue()
    assert await backend.flags("tiny", [image, image]) == [False, False]
    # SDXL's checker (CompVis) is not downloaded and the hub is off on the replicas.
    with pytest.raises(BackendUnavailable, match="the safety checker could not check the image"):
        await backend.flags("sdxl", [image])
    assert await backend.flags("tiny", [image]) == [False]  # the replica lives on


async def test_a_replica_makes_depth_and_pose_guide_maps_with_the_catalog_annotators(backend):
    """`--preprocess depth`/`openpose` on the cluster: the tiny annotators run on a replica, maps at the asked size."""
    import io

    from PIL import Image, ImageDraw

    from bot.ports import GuideBackend

    assert isinstance(backend, GuideBackend) and {"depth", "openpose"} <= backend.guide_preprocessors
    photo = Image.new("RGB", (80, 60), (30, 90, 160))
    ImageDraw.Draw(photo).ellipse((20, 10, 60, 50), fill=(240, 200, 40))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    made = (await backend.make_guide(buffer.getvalue(), "depth", 96, 64)).data
    with Image.open(io.BytesIO(made)) as depth:
        assert depth.format == "PNG" and depth.size == (96, 64)
        red, green, blue = depth.convert("RGB").split()
        assert red.tobytes() == green.tobytes() == blue.tobytes()
        assert red.getextrema() == (0, 255)
    pose = (await backend.make_guide(buffer.getvalue(), "openpose", 96, 64)).data  # the tiny ViTPose
    with Image.open(io.BytesIO(pose)) as drawn:
        assert drawn.format == "PNG" and drawn.mode == "RGB" and drawn.size == (96, 64)
    with pytest.raises(InvalidOption, match="'softedge' needs a catalog annotator"):
        await backend.make_guide(buffer.getvalue(), "softedge", 96, 64)


async def test_a_replica_describes_an_image_with_the_catalog_captioner(backend, tiny_data_dir, tmp_path):
    """/describe on the cluster: the tiny captioner on a replica writes what it writes in the worker; a
    captioner that cannot run is one sentence, and the replica describes the next image."""
    import io

    import torch
    from PIL import Image, ImageDraw

    from bot.catalog import KINDS, Catalog
    from bot.describe import Description
    from bot.ports import DescribingBackend
    from inference import tiny
    from inference.local._captioner import Captioners

    assert isinstance(backend, DescribingBackend)
    backend.check_describe()
    photo = Image.new("RGB", (80, 60), (30, 90, 160))
    ImageDraw.Draw(photo).ellipse((20, 10, 60, 50), fill=(240, 200, 40))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    image = buffer.getvalue()
    first, *more = Captioners("cpu", torch.float32).describe(tiny.tiny_root(tiny_data_dir) / "captioner", image, 4)
    expected = Description(first, more=tuple(more))
    assert first.split() and await backend.describe(image) == expected

    catalog = load_catalog()
    no_tiny = Catalog([entry for kind in KINDS for entry in catalog.entries(kind) if entry.name != "tiny-captioner"])
    without = RayBackend(no_tiny, tiny_data_dir, address=None, app_name=APP)
    with pytest.raises(InvalidOption, match=r"^Describe needs a catalog captioner whose files are in place"):
        without.check_describe()
    with pytest.raises(InvalidOption):
        await without.describe(image)

    damaged = tmp_path / "captioners" / "blip-image-captioning-large"  # blip-large's folder under this bot's data dir
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{not json", encoding="utf-8")
    broken = RayBackend(catalog, tmp_path, address=None, app_name=APP)
    try:
        with pytest.raises(BackendUnavailable) as failed:
            await broken.describe(image)
    finally:
        await broken.aclose()
    assert str(failed.value) == (
        "The ray backend could not describe the image: the captioner failed (OSError);"
        " imagebot doctor checks its files."
    )
    assert await backend.describe(image) == expected
