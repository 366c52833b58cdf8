"""The console chat end to end: the real CLI, the worker process and the tiny diffusers model."""

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.pngmeta import parse_parameters

SCRIPT = "/imagine a red fox --seed 7\nreroll\nrefine 90\nhistory\n"
# `imagebot run` as the console script runs it, reporting at exit which heavy modules the bot process imported.
BOT = (
    "import runpy, sys\n"
    "sys.argv = ['imagebot', 'run']\n"
    "try:\n"
    "    runpy.run_module('imagebot.cli', run_name='__main__')\n"
    "finally:\n"
    "    heavy = sorted(name for name in ('torch', 'diffusers', 'transformers') if name in sys.modules)\n"
    "    print('bot process imported:', heavy, file=sys.stderr)\n"
)


def _run_chat(data_dir: Path, tiny_data_dir: Path, stdin: str, **settings: str) -> subprocess.CompletedProcess[str]:
    (data_dir / "models").mkdir(parents=True, exist_ok=True)
    # Reuse the tiny model built once for the session rather than building it again.
    (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBOT_")}
    env.update(IMAGEBOT_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", IMAGEBOT_LOG_LEVEL="WARNING")
    env.update({f"IMAGEBOT_{key.upper()}": value for key, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-c", BOT],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,  # a hang guard only: CI boxes have been 20x slower than a laptop
        check=False,
    )


@pytest.mark.slow
def test_scripted_chat_makes_three_pngs_and_lists_history(tmp_path, tiny_data_dir):
    """`imagine`, `reroll`, `refine 90`, `history` piped in: three PNGs, seeds as promised."""
    result = _run_chat(tmp_path / "data", tiny_data_dir, SCRIPT)
    assert result.returncode == 0, result.stderr
    assert "tiny offline model" in result.stderr
    # torch lives in the worker process only
    assert "bot process imported: []" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # the libraries' progress bars and advisory notes stay out of the bot's stderr
    assert "it/s]" not in result.stderr and "requires torchvision" not in result.stderr, result.stderr
    pngs = sorted((tmp_path / "data" / "images").rglob("*.png"))
    assert len(pngs) == 3, result.stdout
    params = {p.name: parse_parameters(Image.open(io.BytesIO(p.read_bytes())).text["parameters"]) for p in pngs}
    first, reroll, refine = (params[f"{n}-0.png"]["fields"] for n in (1, 2, 3))
    assert first["Seed"] == "7"
    assert reroll["Seed"] != "7"
    # refine works on the latest generation (the reroll), so it keeps the reroll's seed
    assert refine["Seed"] == reroll["Seed"]
    assert refine["Refiner"] == "tiny-refiner"
    assert refine["Refiner start step"] == "18"  # 90 % of the tiny model's 20 steps
    out = result.stdout
    assert "#1 done" in out and "#2 done" in out and "#3 done" in out
    assert "#3 refine of #2 · done" in out
    assert "#1 generate · done · seed 7" in out
    # each stage's finished progress bar: 90 % of 20 steps is 18 base steps, then 2 refiner steps
    assert "  base    ████████████████████ 18/18\n  refiner ████████████████████ 2/2\n" in out


def test_bad_input_is_one_sentence_and_nothing_is_made(tmp_path, tiny_data_dir):
    result = _run_chat(tmp_path / "data", tiny_data_dir, "/imagine a fox --steps 500\nrefine #99\ninfo\nhistory\n")
    assert result.returncode == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("✖")]
    assert lines == [
        "✖ --steps must be from 1 to 100, not 500.",
        "✖ There is no generation #99.",
        "✖ There is no earlier image of yours to show; make one with /imagine first.",
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert "No images yet" in result.stdout
    assert not list((tmp_path / "data").rglob("*.png"))


@pytest.mark.slow
def test_image_to_image_vary_and_upscale_on_the_worker(tmp_path, tiny_data_dir):
    """From #1: image-to-image at 0.5 of 10 steps runs 5, Vary (Strong) runs 7, Upscale 2× makes 256² in 3."""
    script = (
        "/imagine a red fox --seed 7 --steps 4\n"
        "/imagine a fox at dusk --image #1 --strength 0.5 --steps 10\n"
        "vary strong\n"
        "upscale 2\n"
    )
    result = _run_chat(tmp_path / "data", tiny_data_dir, script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "✖" not in out, out
    for steps in (5, 7, 3):
        assert f"  base    {'█' * 20} {steps}/{steps}\n" in out
    images = tmp_path / "data" / "images"
    fields = {
        n: parse_parameters(Image.open(next(images.rglob(f"{n}-0.png"))).text["parameters"])["fields"]
        for n in (2, 3, 4)
    }
    assert fields[2]["Denoising strength"] == "0.5" and fields[2]["Steps"] == "10"
    assert fields[3]["Denoising strength"] == "0.7" and fields[3]["Seed"] not in ("7", fields[2]["Seed"])
    assert (
        fields[4]["Hires upscale"] == "2" and fields[4]["Size"] == "256x256" and fields[4]["Seed"] == fields[3]["Seed"]
    )
    assert Image.open(next(images.rglob("4-0.png"))).size == (256, 256)
    inputs = list((tmp_path / "data" / "inputs").rglob("*.png"))
    assert len(inputs) == 3  # #1, #2 and #3, each kept once by content


@pytest.mark.slow
def test_a_catalog_upscaler_on_the_worker(tmp_path, tiny_data_dir):
    """IMAGEBOT_UPSCALER=tiny-upscaler: `upscale 2` and `upscale #1 4` are the network alone, new generations."""
    script = "/imagine a red fox --seed 7 --steps 4\nupscale 2\nupscale #1 4\nupscale #2 2\nhistory\n"
    result = _run_chat(tmp_path / "data", tiny_data_dir, script, upscaler="tiny-upscaler")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "✖" not in out and "Traceback" not in out + result.stderr, out + result.stderr
    assert "bot process imported: []" in result.stderr  # the network runs in the worker, like SDXL
    images = tmp_path / "data" / "images"
    made = {n: Image.open(next(images.rglob(f"{n}-0.png"))) for n in (1, 2, 3, 4)}
    assert [made[n].size for n in (1, 2, 3, 4)] == [(128, 128), (256, 256), (512, 512), (512, 512)]
    for n, factor in ((2, "2"), (3, "4"), (4, "2")):
        fields = parse_parameters(made[n].text["parameters"])["fields"]
        assert fields["Postprocess upscale by"] == factor and fields["Postprocess upscaler"] == "tiny-upscaler"
        assert "Denoising strength" not in fields and fields["Seed"] == "7"
    # the network ran: not what a Lanczos resize of #1 gives
    lanczos = made[1].convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
    assert made[2].convert("RGB").tobytes() != lanczos.tobytes()
    assert "#2 upscale of #1 · done" in out and "#3 upscale of #1 · done" in out and "#4 upscale of #2 · done" in out


@pytest.mark.slow
def test_controlnet_on_the_worker(tmp_path, tiny_data_dir):
    """A ControlNet from #1's canny map on steps 1–2 of 4 changes the image; weight 0 is the image without it."""
    script = (
        "/imagine a red fox --seed 7 --steps 4\n"
        "/imagine a red fox --seed 9 --steps 4\n"
        "/imagine a red fox --seed 9 --steps 4 --cn tiny-controlnet=#1@1-2\n"
        "/imagine a red fox --seed 9 --steps 4 --cn tiny-controlnet=#1:0\n"
    )
    data_dir = tmp_path / "data"
    result = _run_chat(data_dir, tiny_data_dir, script)
    assert result.returncode == 0, result.stderr
    assert "✖" not in result.stdout, result.stdout
    images = data_dir / "images"
    made = {n: Image.open(next(images.rglob(f"{n}-0.png"))) for n in (2, 3, 4)}
    fields = parse_parameters(made[3].text["parameters"])["fields"]
    assert fields["ControlNet 0"].startswith("Module: canny, Model: tiny-controlnet, Weight: 1, Guidance Start: 0")
    assert "Guidance End: 0.5" in fields["ControlNet 0"]
    assert made[3].tobytes() != made[2].tobytes()  # the ControlNet acted
    assert made[4].tobytes() == made[2].tobytes()  # at weight 0 it is not run at all


@pytest.mark.slow
def test_blend_and_style_reference_on_the_worker(tmp_path, tiny_data_dir):
    """`blend #1 #2` and `blend #1 FILE`: the tiny model's IP-Adapter on each image at 0.5, the images' own blend;
    `--sref #1`: the same IP-Adapter on the style layers, neither the plain image nor #1 as an image prompt."""
    Image.new("RGB", (96, 64), (20, 200, 40)).save(tmp_path / "green.png")
    script = (
        "/imagine a red fox --seed 7 --steps 4\n"
        "/imagine a blue sea --seed 8 --steps 4\n"
        "blend #1 #2 --seed 9 --steps 4\n"
        f"blend #1 {tmp_path / 'green.png'} --seed 9 --steps 4\n"
        "/imagine best quality, high quality --seed 9 --steps 4\n"
        "/imagine best quality, high quality --seed 9 --steps 4 --sref #1\n"
        "/imagine best quality, high quality --seed 9 --steps 4 --cn blend=#1\n"
    )
    data_dir = tmp_path / "data"
    result = _run_chat(data_dir, tiny_data_dir, script)
    assert result.returncode == 0, result.stderr
    assert "✖" not in result.stdout, result.stdout
    images = data_dir / "images"
    made = {n: Image.open(next(images.rglob(f"{n}-0.png"))) for n in (3, 4, 5, 6, 7)}
    fields = parse_parameters(made[3].text["parameters"])["fields"]
    assert fields["ControlNet 0"].startswith("Module: none, Model: tiny-ip-adapter, Weight: 0.5, Guidance Start: 0")
    assert fields["ControlNet 1"].startswith("Module: none, Model: tiny-ip-adapter, Weight: 0.5, Guidance Start: 0")
    assert parse_parameters(made[3].text["parameters"])["prompt"] == "best quality, high quality"
    assert made[3].tobytes() != made[5].tobytes()  # the images acted
    assert made[3].tobytes() != made[4].tobytes()  # and which images matters
    style = parse_parameters(made[6].text["parameters"])["fields"]["ControlNet 0"]
    assert style.startswith("Module: none, Model: tiny-ip-adapter, Weight: 1, Guidance Start: 0, Guidance End: 1")
    assert style.endswith(", Layers: style")
    assert made[6].tobytes() != made[5].tobytes()  # the style reference acted
    assert made[6].tobytes() != made[7].tobytes()  # on the style layers alone, not as the whole image prompt


@pytest.mark.slow
def test_describe_on_the_worker(tmp_path, tiny_data_dir):
    """`describe #1`, `describe FILE`: the tiny captioner's words in the worker, several ways (the beam's first,
    numbered), the same for the same image, and /imagine takes them as a prompt as they are."""
    Image.new("RGB", (96, 64), (20, 200, 40)).save(tmp_path / "green.png")
    script = f"/imagine a red fox --seed 7 --steps 4\ndescribe #1\ndescribe {tmp_path / 'green.png'}\ndescribe\n"
    data_dir = tmp_path / "data"
    result = _run_chat(data_dir, tiny_data_dir, script)
    assert result.returncode == 0, result.stderr
    assert "✖" not in result.stdout and "Traceback" not in result.stderr, result.stdout + result.stderr
    lines = result.stdout.splitlines()  # the terminal shows the words on the lines after, without a code fence
    heads = [i for i, line in enumerate(lines) if "📝" in line and " in words" in line]
    answers = [list(itertools.takewhile(lambda line: line[:1] in "1234", lines[i + 1 :])) for i in heads]
    assert len(answers) == 3 and all(1 < len(answer) <= 4 for answer in answers), result.stdout
    assert all(line.startswith(f"{n}\ufe0f\u20e3 ") for answer in answers for n, line in enumerate(answer, 1))
    described = [answer[0].split(" ", 1)[1] for answer in answers]  # each answer's first: the beam's
    assert all(len(words.split()) >= 3 for words in described), result.stdout
    assert described[1].endswith(" --ar 3:2")  # the 96×64 file's shape; #1 is the tiny model's square
    assert "📝 #1 in words" in result.stdout and "📝 Your image in words" in result.stdout
    assert answers[0] == answers[2] != answers[1]  # #1 twice (the latest), then the file
    again = _run_chat(tmp_path / "again", tiny_data_dir, f"/imagine {described[0]} --seed 3 --steps 2\n")
    assert again.returncode == 0 and "✖" not in again.stdout, again.stdout
    made = Image.open(next((tmp_path / "again" / "images").rglob("1-0.png")))
    words, _, shape = described[0].partition(" --ar ")
    assert shape == "1:1" and parse_parameters(made.text["parameters"])["prompt"] == words
