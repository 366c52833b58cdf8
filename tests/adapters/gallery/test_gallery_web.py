"""The gallery's pages as a browser sees them: whose images, what a bad link or input gets, and the actions."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile

import aiohttp
import pytest
from PIL import Image

from adapters.gallery import create_app, serving
from bot.history import Generation
from tests.adapters.gallery.conftest import ALICE, BOB, Gallery

DAY = 86400


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no form"
    return found.group(1)


async def test_the_grid_shows_the_owners_images_newest_first_with_their_parameters(gallery: Gallery):
    """A user's link lists their generations newest first, with prompt, seed and model; never another user's."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7")
    owl = await gallery.make(ALICE, "a snowy owl", "--seed 8")
    await gallery.make(BOB, "bob's secret tiger")
    response = await gallery.client.get(await gallery.path(ALICE))
    html = await response.text()
    assert response.status == 200
    assert html.index("a snowy owl") < html.index("a red fox")
    assert f"#{owl.id}" in html and f"#{fox.id}" in html and ">7<" in html and "tiny" in html
    assert "tiger" not in html


async def test_another_users_ids_are_not_found_like_ids_that_do_not_exist(gallery: Gallery):
    """Bob's link gets the same 404 for Alice's image as for no image at all, on every route."""
    fox = await gallery.make(ALICE, "a red fox")
    bob = await gallery.path(BOB)
    for route in (f"i/{fox.id}", f"i/{fox.id}/status", f"thumb/{fox.id}-0.webp", f"image/{fox.id}-0.png"):
        theirs = await gallery.client.get(bob + route)
        nobody = await gallery.client.get(bob + route.replace(str(fox.id), "999999"))
        assert theirs.status == nobody.status == 404, route
        assert await theirs.text() == await nobody.text()
    tiger = await gallery.make(BOB, "a tiger")
    value = csrf_of(await (await gallery.client.get(f"{bob}i/{tiger.id}")).text())
    before = len(gallery.backend.requests)
    posted = await gallery.client.post(f"{bob}i/{fox.id}/reroll", data={"csrf": value})
    assert posted.status == 404 and len(gallery.backend.requests) == before


async def test_a_forged_or_tampered_link_gets_a_plain_not_found(gallery: Gallery):
    """A token with a changed payload or signature is no link: a plain 404 page, no traceback."""
    path = await gallery.path(ALICE)
    token = path.split("/")[2]
    payload, timestamp, signature = token.split(".")

    def changed(part: str) -> str:
        # The first character: its six bits are all data (a last one's may be base64 padding, which
        # decodes the same whatever it is, so changing it forged nothing now and then).
        return ("B" if part[0] == "A" else "A") + part[1:]

    for forged in (
        f"{payload}.{timestamp}.{changed(signature)}",
        f"{changed(payload)}.{timestamp}.{signature}",
        "x" * 40,
        token + "AAAA",
    ):
        response = await gallery.client.get(f"/g/{forged}/")
        html = await response.text()
        assert response.status == 404 and "Traceback" not in html and "Not found" in html


async def test_an_expired_link_shows_the_expiry_page(gallery: Gallery):
    """After its lifetime (7 days) a link says it no longer works and how to get a new one."""
    path = await gallery.path(ALICE)
    gallery.clock.now += 7 * DAY - 60
    assert (await gallery.client.get(path)).status == 200
    gallery.clock.now += 120
    response = await gallery.client.get(path)
    assert response.status == 410
    assert "This link no longer works" in await response.text() and "/gallery" in await response.text()


async def test_revoking_kills_every_earlier_link_and_a_new_one_works(gallery: Gallery):
    """`gallery revoke` makes old links fail; a link asked for afterwards opens the gallery."""
    old = await gallery.path(ALICE)
    await gallery.service.revoke_gallery(ALICE)
    assert (await gallery.client.get(old)).status == 410
    assert (await gallery.client.get(await gallery.path(ALICE))).status == 200
    assert (await gallery.client.get(await gallery.path(BOB))).status == 200


async def test_forget_kills_the_links_and_deletes_the_thumbnails(gallery: Gallery):
    """/forget confirm: the link stops working and the thumbnails made for it are gone."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    assert (await gallery.client.get(f"{path}thumb/{fox.id}-0.webp")).status == 200
    assert list((gallery.data_dir / "gallery" / "thumbs").rglob("*.webp"))
    await gallery.service.forget(ALICE)
    assert (await gallery.client.get(path)).status == 410
    assert not list((gallery.data_dir / "gallery" / "thumbs").rglob("*.webp"))


async def test_thumbnails_are_small_webp_made_once(gallery: Gallery):
    """A card's thumbnail is a WebP at most 384 px a side, kept under the data directory."""
    fox = await gallery.make(ALICE, "a red fox", "--size 768x512")
    path = await gallery.path(ALICE)
    response = await gallery.client.get(f"{path}thumb/{fox.id}-0.webp")
    assert response.status == 200 and response.content_type == "image/webp"
    with Image.open(io.BytesIO(await response.read())) as image:
        assert image.format == "WEBP" and image.size == (384, 256)
    kept = list((gallery.data_dir / "gallery" / "thumbs").rglob(f"{fox.id}-0.webp"))
    assert len(kept) == 1


async def test_the_download_is_the_stored_png_with_its_parameters(gallery: Gallery):
    """The download is the stored file byte for byte, so the PNG's parameters text comes along."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7")
    path = await gallery.path(ALICE)
    response = await gallery.client.get(f"{path}image/{fox.id}-0.png?download=1")
    data = await response.read()
    assert data == (gallery.data_dir / fox.images[0].path).read_bytes()
    assert "attachment" in response.headers["Content-Disposition"]
    with Image.open(io.BytesIO(data)) as image:
        assert "Seed: 7" in image.info["parameters"]


async def test_download_all_is_a_zip_of_every_image_as_stored_and_a_record_of_each(gallery: Gallery):
    """The images byte for byte (their parameters along), newest first, then one JSON line a generation."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7 --n 2")
    owl = await gallery.make(ALICE, "a white owl", "--seed 9 --steps 3")
    await gallery.make(BOB, "a grey wolf")
    (gallery.data_dir / fox.images[1].path).unlink()  # a file gone from disk is left out
    path = await gallery.path(ALICE)
    assert f'href="{path}export.zip"' in await (await gallery.client.get(path)).text()
    response = await gallery.client.get(f"{path}export.zip")
    assert response.status == 200 and response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"] == 'attachment; filename="imagebot.zip"'
    with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [f"images/{owl.id}-0.png", f"images/{fox.id}-0.png", "generations.jsonl"]
        for generation in (owl, fox):
            data = archive.read(f"images/{generation.id}-0.png")
            assert data == (gallery.data_dir / generation.images[0].path).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                assert f"Seed: {generation.seed}" in image.info["parameters"]
        records = [json.loads(line) for line in archive.read("generations.jsonl").decode().splitlines()]
    assert [(r["id"], r["seed"], r["files"]) for r in records] == [
        (owl.id, 9, [f"images/{owl.id}-0.png"]),
        (fox.id, 7, [f"images/{fox.id}-0.png"]),
    ]
    assert records[0]["request"]["prompt"] == "a white owl" and records[0]["request"]["steps"] == 3
    assert records[0]["imagine"].startswith("/imagine a white owl") and "--seed 9" in records[0]["imagine"]


async def test_download_all_of_an_empty_gallery_is_an_empty_zip(gallery: Gallery):
    path = await gallery.path(ALICE)
    assert "export.zip" not in await (await gallery.client.get(path)).text()
    response = await gallery.client.get(f"{path}export.zip")
    with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
        assert archive.namelist() == ["generations.jsonl"] and archive.read("generations.jsonl") == b""


async def test_every_response_carries_the_security_headers(gallery: Gallery):
    """Pages, images, error pages and static files: strict CSP, nosniff, no referrer."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    for url in (
        path,
        f"{path}i/{fox.id}",
        f"{path}thumb/{fox.id}-0.webp",
        "/g/forged-token-xxxxxxxxxxxx/",
        "/static/gallery.js",
    ):
        response = await gallery.client.get(url)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp, url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_pages_have_no_inline_script(gallery: Gallery):
    """The CSP allows no inline script, so the pages hold none (or they would break)."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    for url in (path, f"{path}i/{fox.id}"):
        html = await (await gallery.client.get(url)).text()
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [] and " on" + "click=" not in html


async def test_search_finds_prompt_words_and_survives_fts_syntax(gallery: Gallery):
    """Prompt words narrow the grid (a prefix works); FTS5 operators and quotes are just words."""
    await gallery.make(ALICE, "a red fox in the snow")
    await gallery.make(ALICE, "a snowy owl at night")
    path = await gallery.path(ALICE)
    html = await (await gallery.client.get(path, params={"q": "fox"})).text()
    assert "red fox" in html and "snowy owl" not in html
    html = await (await gallery.client.get(path, params={"q": "sno"})).text()
    assert "red fox" in html and "snowy owl" in html
    for nasty in (
        '"',
        'fox"',
        "AND",
        "fox AND",
        "NEAR(",
        "*",
        "prompt:fox",
        ")(",
        "^fox",
        "-",
        "fox OR",
        "'; DROP",
        "ü ß 狐",
    ):
        response = await gallery.client.get(path, params={"q": nasty})
        assert response.status == 200, nasty
        assert "Traceback" not in await response.text()


@pytest.mark.parametrize(
    "query",
    [
        {"after": "abc"},
        {"after": "-1"},
        {"after": "0"},
        {"after": "9" * 30},
        {"after": str(2**63)},
        {"from": "yesterday"},
        {"to": "2024-13-45"},
        {"sort": "sideways"},
        {"q": "fox " * 100},
        {"lora": "x" * 101},
        {"model": "x" * 101},
        {"starred": "yes"},
    ],
)
async def test_malformed_page_and_filter_values_get_a_plain_bad_request(gallery: Gallery, query):
    """Huge, negative or non-numeric page cursors and unreadable dates or sorts: 400, a plain page."""
    response = await gallery.client.get(await gallery.path(ALICE), params=query)
    html = await response.text()
    assert response.status == 400 and "Bad request" in html and "Traceback" not in html


async def test_huge_ids_in_paths_are_not_found(gallery: Gallery):
    """An id past SQLite's integers is a 404, not an overflow."""
    path = await gallery.path(ALICE)
    for route in (f"i/{'9' * 30}", f"i/{2**63}", f"image/{'9' * 40}-0.png", "i/-1", "i/1e9"):
        assert (await gallery.client.get(path + route)).status == 404, route


async def test_pages_follow_one_another_by_id(gallery: Gallery):
    """25 images: the first page shows 24 and an Older link; that page shows the oldest and no more."""
    made = [await gallery.make(ALICE, f"image number {n}") for n in range(25)]
    path = await gallery.path(ALICE)
    first = await (await gallery.client.get(path)).text()
    assert f"#{made[-1].id}<" in first and f"#{made[0].id}<" not in first
    older = re.search(r'href="([^"]+after=\d+)"', first)
    assert older
    second = await (await gallery.client.get(older.group(1).replace("&amp;", "&"))).text()
    assert f"#{made[0].id}<" in second and f"#{made[1].id}<" not in second and "after=" not in second


async def test_filters_by_model_and_date_and_sorts_oldest_first(gallery: Gallery):
    """A date range outside the images shows none; oldest first turns the order round."""
    await gallery.make(ALICE, "first fox")
    await gallery.make(ALICE, "second fox")
    path = await gallery.path(ALICE)
    html = await (await gallery.client.get(path, params={"sort": "old", "model": "tiny"})).text()
    assert html.index("first fox") < html.index("second fox")
    html = await (await gallery.client.get(path, params={"to": "2001-01-01"})).text()
    assert "fox" not in html.split("</form>", 1)[1]
    html = await (await gallery.client.get(path, params={"model": "sdxl"})).text()
    assert "first fox" not in html


async def test_the_lora_filter_lists_the_users_loras_and_shows_only_images_with_it(gallery: Gallery):
    """The LoRA menu offers the LoRAs the user used; choosing one shows only the images made with it."""
    await gallery.make(ALICE, "a pixel fox", "--lora tiny-lora:0.7")
    await gallery.make(ALICE, "a plain owl")
    await gallery.make(BOB, "bob's pixel tiger", "--lora tiny-lora-2")
    path = await gallery.path(ALICE)
    grid = await (await gallery.client.get(path)).text()
    menu = re.search(r'<select name="lora">(.*?)</select>', grid, re.S)
    assert menu and re.findall(r'<option value="([^"]*)"', menu.group(1)) == ["", "tiny-lora"]
    filtered = await (await gallery.client.get(path, params={"lora": "tiny-lora"})).text()
    assert '<option value="tiny-lora" selected>' in filtered
    shown = filtered.split("</form>", 1)[1]
    assert "a pixel fox" in shown and "a plain owl" not in shown and "tiger" not in shown
    none = (await (await gallery.client.get(path, params={"lora": "tiny-lora-2"})).text()).split("</form>", 1)[1]
    assert "No images match this search" in none


async def test_an_action_without_its_csrf_value_is_refused_and_queues_nothing(gallery: Gallery):
    """A POST with a missing or wrong CSRF value gets 403 and no job."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    before = len(gallery.backend.requests)
    for data in ({}, {"csrf": "0" * 32}):
        response = await gallery.client.post(f"{path}i/{fox.id}/reroll", data=data, allow_redirects=False)
        assert response.status == 403
    assert len(gallery.backend.requests) == before
    assert (await gallery.client.get(f"{path}i/{fox.id}/reroll")).status == 405


async def test_the_csrf_value_of_one_link_does_not_work_with_another(gallery: Gallery):
    """A form value is bound to its link: Alice's value with a second link of hers is refused."""
    fox = await gallery.make(ALICE, "a red fox")
    first = await gallery.path(ALICE)
    gallery.clock.now += 1
    second = await gallery.path(ALICE)
    assert first != second
    value = csrf_of(await (await gallery.client.get(f"{first}i/{fox.id}")).text())
    response = await gallery.client.post(f"{second}i/{fox.id}/reroll", data={"csrf": value}, allow_redirects=False)
    assert response.status == 403


async def _acted(gallery: Gallery, url: str, form: dict[str, str]) -> Generation:
    """Post a card's action form; return what it made, once made (it redirects to the new image's page)."""
    response = await gallery.client.post(url, data=form, allow_redirects=False)
    assert response.status == 303
    new_id = int(response.headers["Location"].rsplit("/", 1)[1])
    job = gallery.service.job(new_id)
    if job is not None:
        await job.result()
    made = await gallery.history.generations.get(new_id)
    assert made is not None
    return made


@pytest.mark.parametrize(
    ("action", "form", "kind"),
    [
        ("reroll", {}, "reroll"),
        ("refine", {"percent": "80"}, "refine"),
        ("vary", {"kind": "strong"}, "vary"),
        ("upscale", {"factor": "2"}, "upscale"),
    ],
)
async def test_an_action_queues_the_chat_use_case_and_shows_its_result(gallery: Gallery, action, form, kind):
    """Each card action makes a new generation of the original, audited in its server, shown in the gallery."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7")
    path = await gallery.path(ALICE)
    value = csrf_of(await (await gallery.client.get(f"{path}i/{fox.id}")).text())
    made = await _acted(gallery, f"{path}i/{fox.id}/{action}", {"csrf": value, **form})
    new_id = made.id
    assert made.parent_id == fox.id and made.action == kind and made.status == "done"
    html = await (await gallery.client.get(f"{path}i/{new_id}")).text()
    assert f"image/{new_id}-0.png" in html and f"#{fox.id}</a>" in html
    audit = await gallery.history.policies.recent_audit("discord", "guild-1")
    assert (audit[0].action, audit[0].generation_id, audit[0].user_id) == (kind, new_id, ALICE.user_id)


@pytest.mark.parametrize(
    ("form", "size", "sides"),
    [
        ({"factor": "1.5"}, (512, 512), (64, 64, 64, 64)),
        ({"factor": "2"}, (512, 512), (128, 128, 128, 128)),
        ({"direction": "left"}, (768, 512), (0, 0, 0, 256)),
        ({"direction": "down"}, (512, 768), (0, 0, 256, 0)),
    ],
    ids=["zoom", "zoom-2", "pan-left", "pan-down"],
)
async def test_zoom_out_and_pan_make_a_new_image_from_the_card(gallery: Gallery, form, size, sides):
    """Zoom Out 1.5× or 2× keeps the size and paints a border; a pan arrow grows the canvas that way."""
    fox = await gallery.make(ALICE, "a red fox", "--seed 7 --size 512x512")
    path = await gallery.path(ALICE)
    html = await (await gallery.client.get(f"{path}i/{fox.id}")).text()
    assert "Zoom Out 1.5×" in html and "Zoom Out 2×" in html
    assert all(f'aria-label="Pan {d}"' in html for d in ("left", "right", "up", "down"))
    action = "pan" if "direction" in form else "zoom"
    made = await _acted(gallery, f"{path}i/{fox.id}/{action}", {"csrf": csrf_of(html), **form})
    assert made.parent_id == fox.id and made.status == "done"
    assert (made.request.width, made.request.height) == size and made.request.outpaint.sides == sides
    assert made.request.seed != 7 and made.request.prompt == "a red fox"


async def test_make_square_is_offered_under_a_wide_image_and_squares_it(gallery: Gallery):
    wide = await gallery.make(ALICE, "a red fox", "--seed 7 --size 512x256")
    path = await gallery.path(ALICE)
    html = await (await gallery.client.get(f"{path}i/{wide.id}")).text()
    assert f"i/{wide.id}/square" in html and "Make Square" in html
    made = await _acted(gallery, f"{path}i/{wide.id}/square", {"csrf": csrf_of(html)})
    assert (made.request.width, made.request.height) == (512, 512) and made.request.outpaint.sides == (128, 0, 128, 0)
    html = await (await gallery.client.get(f"{path}i/{made.id}")).text()
    assert f"i/{made.id}/square" not in html


async def test_vary_upscale_zoom_and_pan_act_on_the_image_chosen_of_several(gallery: Gallery):
    """Under two images the page says which one Vary, Upscale, Zoom Out and pan act on (the first, until another
    is chosen); with image 2 chosen, Vary starts from image 2, as ``vary strong #1.2`` does in chat. An image the
    result does not have, or a number that is no number, is a bad request and queues nothing."""
    foxes = await gallery.make(ALICE, "two foxes", "--seed 7 --count 2 --size 256x256")
    path = await gallery.path(ALICE)
    page = await (await gallery.client.get(f"{path}i/{foxes.id}")).text()
    assert "act on image 1." in page and 'name="image" value="1"' in page
    page = await (await gallery.client.get(f"{path}i/{foxes.id}?image=2")).text()
    assert "act on image 2." in page and 'aria-current="true">Act on image 2<' in page
    assert page.count('name="image" value="2"') == 5  # Vary, Upscale, Zoom Out, pan, Remix
    form = {"csrf": csrf_of(page), "kind": "strong"}
    second = await _acted(gallery, f"{path}i/{foxes.id}/vary", {**form, "image": "2"})
    first = await _acted(gallery, f"{path}i/{foxes.id}/vary", {**form, "image": "1"})
    in_chat = await (await gallery.service.vary(ALICE, "#1.2", "strong")).result()
    assert second.request.init_image == in_chat.request.init_image != first.request.init_image
    assert second.parent_id == foxes.id and second.action == "vary"
    upscaled = await _acted(gallery, f"{path}i/{foxes.id}/upscale", {**form, "factor": "2", "image": "2"})
    assert upscaled.request.seed == 8  # image 2's own seed
    made = len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id))
    for image in ("3", "0", "x", "22", "1 "):
        response = await gallery.client.get(f"{path}i/{foxes.id}", params={"image": image})
        assert response.status == 400, image
        response = await gallery.client.post(f"{path}i/{foxes.id}/vary", data={**form, "image": image})
        assert response.status == 400, image
    assert len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id)) == made


async def test_remix_rewords_the_prompt_then_varies_zooms_or_pans_the_chosen_image(gallery: Gallery):
    """The card's Remix form (Midjourney's) holds the prompt; sent with new words and a button, that button's action
    runs on the chosen image with them. Words with a flag, or a button that is no remix, are refused; nothing queued."""
    foxes = await gallery.make(ALICE, "two foxes", "--seed 7 --count 2 --size 256x256")
    path = await gallery.path(ALICE)
    page = await (await gallery.client.get(f"{path}i/{foxes.id}?image=2")).text()
    assert ">two foxes</textarea>" in page
    assert all(f'name="do" value="{action}"' in page for action in ("vary-strong", "zoom-out-2", "pan-left"))
    form = {"csrf": csrf_of(page), "image": "2", "prompt": "two grey wolves"}
    varied = await _acted(gallery, f"{path}i/{foxes.id}/remix", {**form, "do": "vary-strong"})
    in_chat = await (await gallery.service.vary(ALICE, "#1.2", "strong")).result()
    assert (varied.request.prompt, varied.action, varied.parent_id) == ("two grey wolves", "vary", foxes.id)
    assert varied.request.init_image == in_chat.request.init_image
    panned = await _acted(gallery, f"{path}i/{foxes.id}/remix", {**form, "do": "pan-left"})
    assert panned.request.prompt == "two grey wolves" and panned.request.outpaint.sides == (0, 0, 0, 128)
    made = len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id))
    for data, sentence in (
        ({**form, "prompt": "wolves --ar 16:9", "do": "vary-subtle"}, "Remix changes the prompt&#39;s words only"),
        ({**form, "do": "upscale-2"}, "Remix is for Vary, Zoom Out, Make Square and Pan"),
    ):
        response = await gallery.client.post(f"{path}i/{foxes.id}/remix", data=data, allow_redirects=False)
        assert response.status == 400 and sentence in await response.text()
    response = await gallery.client.post(f"{path}i/{foxes.id}/remix", data={"csrf": form["csrf"]})
    assert response.status == 400
    assert len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id)) == made


async def test_the_card_offers_only_actions_that_can_work_and_refuses_a_forged_direction(gallery: Gallery):
    """A 128² image has no Zoom Out; a model without a refiner no Refine; a direction not offered is a bad request."""
    fox = await gallery.make(ALICE, "a red fox", "--model sdxl-turbo --size 128x128")
    path = await gallery.path(ALICE)
    html = await (await gallery.client.get(f"{path}i/{fox.id}")).text()
    assert "Zoom Out" not in html and "/refine" not in html
    assert "/reroll" in html and "Vary (Subtle)" in html and 'aria-label="Pan up"' in html
    for action, form in [("pan", {"direction": "sideways"}), ("zoom", {"factor": "3"})]:
        data = {"csrf": csrf_of(html), **form}
        response = await gallery.client.post(f"{path}i/{fox.id}/{action}", data=data, allow_redirects=False)
        assert response.status == 400
    assert len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id)) == 1


async def test_a_refused_action_shows_the_chats_sentence(gallery: Gallery):
    """Refining at 150 % is refused with a plain page; an out-of-range percent is a bad request."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    value = csrf_of(await (await gallery.client.get(f"{path}i/{fox.id}")).text())
    response = await gallery.client.post(f"{path}i/{fox.id}/refine", data={"csrf": value, "percent": "150"})
    assert response.status == 400 and "Traceback" not in await response.text()


async def test_delete_removes_the_image_and_returns_to_the_grid(gallery: Gallery):
    """Delete from the gallery deletes the generation and its file, as the chat's button does."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    value = csrf_of(await (await gallery.client.get(f"{path}i/{fox.id}")).text())
    response = await gallery.client.post(f"{path}i/{fox.id}/delete", data={"csrf": value}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == path
    assert await gallery.history.generations.get(fox.id) is None
    assert not (gallery.data_dir / fox.images[0].path).exists()
    assert (await gallery.client.get(f"{path}i/{fox.id}")).status == 404


async def test_deleting_or_purging_an_image_deletes_its_thumbnail(gallery: Gallery):
    """A deleted generation's thumbnail goes with it (from the chat or by retention), others' stay."""
    fox, owl = await gallery.make(ALICE, "a red fox"), await gallery.make(ALICE, "an owl")
    path = await gallery.path(ALICE)
    for made in (fox, owl):
        assert (await gallery.client.get(f"{path}thumb/{made.id}-0.webp")).status == 200
    thumbs = gallery.data_dir / "gallery" / "thumbs"
    await gallery.service.delete(ALICE, fox.id)
    assert [kept.name for kept in thumbs.rglob("*.webp")] == [f"{owl.id}-0.webp"]
    await gallery.service.purge(0)
    assert not list(thumbs.rglob("*.webp"))


async def test_status_says_when_a_queued_image_is_done(gallery: Gallery):
    """The small JSON the page polls: not final while the job waits, final once it is done."""
    fox = await gallery.make(ALICE, "a red fox")
    path = await gallery.path(ALICE)
    response = await gallery.client.get(f"{path}i/{fox.id}/status")
    assert await response.json() == {"id": fox.id, "status": "done", "final": True}


async def test_a_link_is_rate_limited(slow_gallery: Gallery):
    """Five requests a minute: the sixth gets 429 with a plain page."""
    path = await slow_gallery.path(ALICE)
    statuses = [(await slow_gallery.client.get(path)).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]


async def test_the_access_log_never_holds_a_token(gallery: Gallery, caplog):
    """The access log shows the path with the token cut out, and no search words."""
    path = await gallery.path(ALICE)
    token = path.split("/")[2]
    app = create_app(service=gallery.service, store=gallery.store, links=gallery.links)
    caplog.set_level(logging.INFO, logger="imagebot.gallery.access")
    async with serving(app, "127.0.0.1", 0) as runner, aiohttp.ClientSession() as session:
        host, port = runner.addresses[0][:2]
        async with session.get(f"http://{host}:{port}{path}", params={"q": "secret words"}) as response:
            assert response.status == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "imagebot.gallery.access"]
    assert lines and all(token not in line and "secret" not in line for line in lines)
    assert any("/g/…/" in line for line in lines)


async def test_an_image_from_before_prompt_weights_says_it_reads_its_prompt_as_written(gallery: Gallery):
    """Its page says the brackets are words and the prompt ends at 77 tokens, as a reroll of it makes it;
    an image made since says nothing of it."""
    from bot.request import GenerationRequest

    request = GenerationRequest(prompt="a (red:1.3) fox", model="tiny", width=128, height=128, steps=2, seed=7)
    pages = []
    for weighting in (False, True):
        job = await gallery.service.submit(request.model_copy(update={"prompt_weighting": weighting}), ALICE)
        made = await job.result()
        pages.append(await (await gallery.client.get(f"{await gallery.path(ALICE)}i/{made.id}")).text())
    note = "This image was made before prompt weights: its brackets are read as words and its prompt ends at"
    assert note in pages[0] and note not in pages[1]


async def test_vary_region_repaints_the_parts_selected_on_its_page_and_refuses_bad_selections(gallery: Gallery):
    """🖌️ Vary (Region) (Midjourney's): the card links to the chosen image's editor page; the parts sent from it
    become the mask (grown a little) of an inpaint of that image with its settings, a new seed and the same count,
    re-worded when the words changed. A selection that is empty, too small, past the image, unreadable or of too many
    parts, or words with a flag, is one sentence on a 400 page, and nothing is queued."""
    from bot.images import input_path
    from bot.regions import MAX_PARTS, REGION_STRENGTH, grown_by

    foxes = await gallery.make(ALICE, "two foxes", "--seed 7 --count 2 --size 256x256")
    path = await gallery.path(ALICE)
    card = await (await gallery.client.get(f"{path}i/{foxes.id}?image=2")).text()
    assert f'href="{path}i/{foxes.id}/region?image=2">🖌️ Vary (Region)</a>' in card
    response = await gallery.client.get(f"{path}i/{foxes.id}/region", params={"image": "2"})
    page = await response.text()
    assert response.status == 200 and f"Vary (Region) · #{foxes.id}.2" in page
    assert f'src="{path}image/{foxes.id}-1.png"' in page and '<canvas width="256" height="256"' in page
    assert ">two foxes</textarea>" in page and 'name="regions" value=""' in page and 'name="image" value="2"' in page
    form = {"csrf": csrf_of(page), "image": "2", "prompt": "two foxes"}

    box = "32,32 160,32 160,128 32,128"
    varied = await _acted(gallery, f"{path}i/{foxes.id}/region", {**form, "regions": box})
    in_chat = await (await gallery.service.vary(ALICE, f"#{foxes.id}.2", "strong")).result()
    request = varied.request
    assert (varied.action, varied.parent_id, request.prompt, request.count) == ("vary", foxes.id, "two foxes", 2)
    assert request.init_image == in_chat.request.init_image and request.strength == REGION_STRENGTH
    assert request.seed not in (foxes.seed, foxes.seed + 1) and request.mask_image is not None
    # Its buttons: Vary (Region) again, Reroll (the same parts, a new seed); no Edit, as no /imagine names the mask.
    offered = gallery.service.result_actions(request)
    assert {"region", "reroll", "vary-strong"} <= set(offered) and "edit" not in offered
    mask = Image.open(gallery.data_dir / input_path(request.mask_image))
    reach = grown_by(256, 256)
    assert (mask.mode, mask.size) == ("L", (256, 256))
    assert mask.getpixel((96, 80)) == mask.getpixel((32 - reach, 80)) == mask.getpixel((160 + reach, 128)) == 255
    assert mask.getpixel((32 - reach - 2, 80)) == mask.getpixel((200, 200)) == mask.getpixel((96, 128 + reach + 2)) == 0
    reworded = await _acted(gallery, f"{path}i/{foxes.id}/region", {**form, "regions": box, "prompt": "a fox in a hat"})
    assert reworded.request.prompt == "a fox in a hat" and reworded.request.mask_image == request.mask_image
    await gallery.service.user_settings.update(ALICE, {"vary_region": 0.6})  # the user's own strength
    assert (await _acted(gallery, f"{path}i/{foxes.id}/region", {**form, "regions": box})).request.strength == 0.6
    page = await (await gallery.client.get(f"{path}i/{foxes.id}/region")).text()
    assert 'name="strength" min="0.05" max="1" step="0.05" value="0.6"' in page  # the page starts from it
    chosen = await _acted(gallery, f"{path}i/{foxes.id}/region", {**form, "regions": box, "strength": "0.45"})
    assert chosen.request.strength == 0.45

    made = len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id))
    for regions, sentence in (
        ("", "The selection is empty"),
        ("1,1 3,1 3,3 1,3", "The selection is too small: select at least 1% of the image"),
        ("0,0 300,0 300,300", "The selection reaches past the image, which is 256×256 pixels"),
        ("0,0 10,10 <script>", "The selection could not be read"),
        (";".join([box] * (MAX_PARTS + 1)), f"The selection has {MAX_PARTS + 1} parts; the most is {MAX_PARTS}"),
    ):
        response = await gallery.client.post(f"{path}i/{foxes.id}/region", data={**form, "regions": regions})
        assert response.status == 400 and sentence in await response.text(), regions
    for strength in ("0", "1.5"):
        response = await gallery.client.post(
            f"{path}i/{foxes.id}/region", data={**form, "regions": box, "strength": strength}
        )
        assert (
            response.status == 400
            and f"Strength must be over 0 and at most 1, not {strength}." in await response.text()
        )
    response = await gallery.client.post(f"{path}i/{foxes.id}/region", data={**form, "regions": box, "strength": "-1"})
    assert response.status == 400
    data = {**form, "regions": box, "prompt": "wolves --ar 16:9"}
    response = await gallery.client.post(f"{path}i/{foxes.id}/region", data=data)
    assert response.status == 400 and "Remix changes the prompt&#39;s words only" in await response.text()
    response = await gallery.client.post(f"{path}i/{foxes.id}/region", data={"csrf": form["csrf"]})
    assert response.status == 400
    assert len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id)) == made

    # Another user's image is no page of theirs; an image the result does not have is a bad request.
    bob = await gallery.path(BOB)
    assert (await gallery.client.get(f"{bob}i/{foxes.id}/region")).status == 404
    assert (await gallery.client.get(f"{path}i/{foxes.id}/region", params={"image": "3"})).status == 400


async def test_images_ticked_on_the_grid_download_as_one_zip_and_delete_together(gallery: Gallery):
    """Each card has a box; the ticked ones download as one ZIP (their files and records alone) or are deleted
    together, as each one's Delete would, and the grid says how many went. None ticked, another user's image among
    them, too many or a forged id is refused, and nothing is deleted."""
    fox = await gallery.make(ALICE, "a red fox")
    owl = await gallery.make(ALICE, "a snowy owl")
    tiger = await gallery.make(ALICE, "a tiger")
    bobs = await gallery.make(BOB, "bob's secret cat")
    path = await gallery.path(ALICE)
    grid = await (await gallery.client.get(path)).text()
    for generation in (fox, owl, tiger):
        assert f'<input type="checkbox" name="id" value="{generation.id}" form="picked">' in grid
    assert '<form id="picked" class="picked" method="post"' in grid
    csrf = csrf_of(grid)
    picked = aiohttp.FormData([("csrf", csrf), ("id", str(fox.id)), ("id", str(owl.id)), ("id", str(fox.id))])

    response = await gallery.client.post(f"{path}export.zip", data=picked)
    assert response.status == 200 and response.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
        assert archive.namelist() == [f"images/{fox.id}-0.png", f"images/{owl.id}-0.png", "generations.jsonl"]
        assert archive.read(f"images/{owl.id}-0.png") == (gallery.data_dir / owl.images[0].path).read_bytes()
        records = [json.loads(line) for line in archive.read("generations.jsonl").decode().splitlines()]
    assert [record["id"] for record in records] == [fox.id, owl.id]

    before = len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id))
    for fields, status, sentence in (
        ([("csrf", csrf)], 400, "Tick the images to download or delete first."),
        ([("csrf", csrf), ("id", str(fox.id)), ("id", str(bobs.id))], 404, "There is nothing here."),
        ([("csrf", csrf), *[("id", str(fox.id))] * 101], 400, "That is 101 images; tick at most 100 at once."),
        ([("csrf", csrf), ("id", "1 OR 1=1")], 400, "That address or search could not be read."),
        ([("id", str(fox.id))], 403, "That form was stale"),
    ):
        for action in ("delete", "export.zip"):
            response = await gallery.client.post(f"{path}{action}", data=aiohttp.FormData(fields))
            assert response.status == status and sentence in await response.text(), (fields, action)
    assert len(await gallery.history.generations.recent(ALICE.platform, ALICE.user_id)) == before
    assert await gallery.history.generations.get(bobs.id) is not None

    response = await gallery.client.post(f"{path}delete", data=picked, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == f"{path}?deleted=2"
    page = await (await gallery.client.get(response.headers["Location"])).text()
    assert "2 images deleted." in page and "a tiger" in page and "a red fox" not in page and "a snowy owl" not in page
    assert [g.id for g in await gallery.history.generations.recent(ALICE.platform, ALICE.user_id)] == [tiger.id]
    assert not (gallery.data_dir / fox.images[0].path).exists()
    assert (await gallery.client.get(path, params={"deleted": "many"})).status == 400


async def test_a_vary_or_upscale_page_compares_it_with_the_image_it_was_made_from(gallery: Gallery):
    """Before and after, one over the other with a slider: under a Vary (of image 2: that image) and an Upscale,
    the image it started from; not under a pan, whose framing is new, nor an image made from a prompt."""
    foxes = await gallery.make(ALICE, "two foxes", "--count 2 --size 256x256")
    path = await gallery.path(ALICE)
    varied = await (await gallery.service.vary(ALICE, f"#{foxes.id}.2", "strong")).result()
    larger = await (await gallery.service.upscale(ALICE, f"#{foxes.id}", 2)).result()
    panned = await (await gallery.service.pan(ALICE, f"#{foxes.id}", "left")).result()
    for made, image in ((varied, 1), (larger, 0)):
        page = await (await gallery.client.get(f"{path}i/{made.id}")).text()
        assert f"Compare with #{foxes.id}{'.2' if image else ''}, the image it was made from" in page
        assert f'<img class="before" src="{path}image/{foxes.id}-{image}.png"' in page
        assert f'<img src="{path}image/{made.id}-0.png" alt="#{made.id}">' in page
    for made in (panned, foxes):
        assert 'class="compare"' not in await (await gallery.client.get(f"{path}i/{made.id}")).text()
