"""Prompts on the local worker as A1111 reads them: weights, BREAK, and past CLIP's 77 tokens.

The tiny model's tokenizer spells words out byte by byte, so 75 tokens are about 75
characters: a prompt's tail past them is easy to reach.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.catalog import load_catalog
from bot.request import RefinerSpec
from inference.local._job import batch_key, build_job
from tests.inference.tiny_requests import tiny_request

pytest.importorskip("diffusers")

from inference.local._prompts import _tokens, chunk_counts, encode

# The tiny model's real pipelines: in `make test`, not in `make test-fast`.
pytestmark = pytest.mark.slow

CATALOG = load_catalog()
REFINED = RefinerSpec(model="tiny-refiner", start_step=3)
LONG = "a red cube on a table, " * 5  # 115 characters, 85 tokens on the tiny tokenizer: two chunks


def made(runner, **fields) -> list[bytes]:
    job = build_job(tiny_request(**fields), CATALOG, runner.data_dir)
    return [image.data for image in runner.run(job)]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"negative_prompt": "blurry, text"},
        {"refiner": REFINED},
        {"negative_prompt": "", "refiner": REFINED},  # the refiner encodes an empty negative, not zeros
        {"count": 2},
        {"clip_skip": 1},
    ],
    ids=["plain", "negative", "refined", "empty-negative-refined", "two-images", "clip-skip"],
)
def test_a_plain_prompt_makes_the_same_bytes_as_before(runner, fields):
    """Without weights and within 75 tokens, the chunked encoding is diffusers' own: the very same PNG
    as a generation stored before weighting (read as written) makes, with and without the refiner."""
    assert made(runner, **fields) == made(runner, prompt_weighting=False, **fields)


def test_weights_change_the_image_and_weight_one_does_not(runner):
    """(cube:1) is the bare word; (cube:1.5) and [cube] each make another image."""
    plain = made(runner, prompt="a red cube on a table")
    assert made(runner, prompt="a red (cube:1) on a table") == plain
    heavier = made(runner, prompt="a red (cube:1.5) on a table")
    lighter = made(runner, prompt="a red [cube] on a table")
    assert len({plain[0], heavier[0], lighter[0]}) == 3
    # and the refiner reads them too: the refined images differ the same way
    assert made(runner, prompt="a red (cube:1.5) on a table", refiner=REFINED) != made(runner, refiner=REFINED)


def test_the_negative_prompt_is_weighted_too(runner):
    """--no (blurry:1.5) is not --no blurry."""
    assert made(runner, negative_prompt="(blurry:1.5)") != made(runner, negative_prompt="blurry")


def test_words_past_77_tokens_count_only_when_weighting(runner):
    """diffusers cuts a prompt at 77 tokens, so its last words changed nothing; in chunks they do.
    A generation stored before weighting still cuts, and so still makes what it made."""
    assert made(runner, prompt=LONG + "green") != made(runner, prompt=LONG + "blue")
    assert made(runner, prompt=LONG + "green", prompt_weighting=False) == made(
        runner, prompt=LONG + "blue", prompt_weighting=False
    )


def test_break_starts_a_new_chunk(runner):
    """BREAK moves what follows into a chunk of its own: another image than the words run on."""
    assert made(runner, prompt="a red cube BREAK on a table") != made(runner, prompt="a red cube on a table")


def test_the_negative_gets_as_many_chunks_as_the_prompt(runner):
    """A long prompt with a short negative (and the reverse) gives the UNet sequences of one length."""
    base = runner._base_pipeline(build_job(tiny_request(), CATALOG, runner.data_dir).model)
    assert chunk_counts(base, LONG, None) == 2 and chunk_counts(base, "a cube", None) == 1
    for prompt, negative in ((LONG, "blurry"), ("a cube", LONG)):
        conditioning = encode(base, prompt, negative, 0)
        assert conditioning.embeds.shape[:2] == (1, 2 * 77)
        assert conditioning.negative.shape == conditioning.embeds.shape
    assert made(runner, prompt="a red cube", negative_prompt=LONG)


@pytest.mark.parametrize(
    ("prompt", "lengths"),
    [
        # 70 letters and a comma, then 20 more: the first chunk ends after the comma (5 from its end)
        ("x" * 70 + ", " + "y" * 20, [71, 20]),
        # the comma 35 from the end is too far back: the chunk is cut at 75, mid-word
        ("x" * 40 + ", " + "y" * 50, [75, 16]),
        # a comma at the very end of a full chunk moves nothing
        ("x" * 74 + ", " + "y" * 5, [75, 5]),
    ],
)
def test_a_full_chunk_ends_at_a_comma_near_its_end(runner, prompt, lengths):
    """A1111 ends a full chunk after its last comma within 20 tokens of the end, so a phrase stays whole
    (the tiny tokenizer spells each letter as a token, the comma as one)."""
    base = runner._base_pipeline(build_job(tiny_request(), CATALOG, runner.data_dir).model)
    chunks = _tokens(base, base.tokenizer, prompt)
    assert [len(chunk) for chunk in chunks] == lengths
    assert chunk_counts(base, prompt, None) == 2


def test_prompts_of_different_lengths_in_one_batch_each_make_their_own_image(runner, tiny_data_dir):
    """A batch of a long and a short prompt runs as two calls: padded to one length, the short one's
    image would change. Each image is the one its job makes alone."""
    requests = [
        tiny_request(prompt=LONG + "green", seed=11),
        tiny_request(prompt="a (blue:1.3) sphere", seed=500, count=2),
        tiny_request(prompt=LONG + "blue", seed=77),
    ]
    jobs = [build_job(request, CATALOG, tiny_data_dir) for request in requests]
    assert len({batch_key(job) for job in jobs}) == 1
    batched = runner.run_batch(jobs)
    assert [[image.seed for image in images] for images in batched] == [[11], [500, 501], [77]]
    for job, images in zip(jobs, batched, strict=True):
        for image, alone in zip(images, runner.run(job), strict=True):
            a, b = pixels(image.data), pixels(alone.data)
            assert np.abs(a - b).max() <= 1 and np.count_nonzero(a != b) <= 0.001 * a.size


def test_a_stored_generation_and_a_new_one_never_share_a_call(tiny_data_dir):
    """Prompts read as written and prompts read with weights take different pipeline arguments."""

    def key(**fields):
        return batch_key(build_job(tiny_request(**fields), CATALOG, tiny_data_dir))

    assert key(prompt_weighting=False) != key()
