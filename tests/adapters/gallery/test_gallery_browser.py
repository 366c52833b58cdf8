"""The gallery end to end in a real headless browser: `imagebot run` with the tiny model on the local worker.

Debian's chromium and chromium-driver (`make test` installs them), driven by Selenium
pointed at the system driver, so nothing is downloaded at run time. The bot is the real
CLI with the console chat on stdin: `/imagine`, then `gallery` gives the link the browser opens.

Set IMAGEBOT_SCREENSHOTS=docs/ to save the grid and the detail view there.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.gallery import Links, secret_key
from storage import SqliteGallery

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
WAIT = 600  # a hang guard only: the tiny model's first image waits for the worker to start on a busy box

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMEDRIVER.exists() and CHROMIUM.exists()),
        reason="needs Debian's chromium and chromium-driver (make test installs them as root)",
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Bot:
    """`imagebot run` in a subprocess: the console chat on stdin, the gallery on a port."""

    def __init__(self, data_dir: Path, tiny_data_dir: Path) -> None:
        (data_dir / "models").mkdir(parents=True, exist_ok=True)
        (data_dir / "models" / "tiny").symlink_to(tiny_data_dir / "models" / "tiny")
        self.data_dir = data_dir
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBOT_")}
        env.update(
            IMAGEBOT_DATA_DIR=str(data_dir),
            IMAGEBOT_GALLERY_PORT=str(self.port),
            IMAGEBOT_LOG_LEVEL="WARNING",
            HF_HUB_OFFLINE="1",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imagebot", "run"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, pattern: str) -> re.Match[str]:
        """Return the first output line matching `pattern`, waiting for it."""
        deadline = time.monotonic() + WAIT
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matched {pattern!r}; the bot said:\n{''.join(seen)}")

    def link_of(self, platform: str, user_id: str, *, days_ago: float = 0) -> str:
        """Mint a link with the bot's own key, as /gallery on another platform (or days ago) would have."""

        async def mint() -> str:
            store = await SqliteGallery.open(self.data_dir / "imagebot.sqlite3")
            try:
                links = Links(
                    secret=secret_key(self.data_dir, None),
                    store=store,
                    base_url=f"http://127.0.0.1:{self.port}",
                    data_dir=self.data_dir,
                    clock=lambda: time.time() - days_ago * 86400,
                )
                return await links.link(platform, user_id)
            finally:
                await store.close()

        return asyncio.run(mint())

    def stop(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return "".join(rest)


@pytest.fixture
def bot(tmp_path: Path, tiny_data_dir: Path) -> Iterator[Bot]:
    running = Bot(tmp_path / "data", tiny_data_dir)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: object, name: str) -> None:
    folder = os.environ.get("IMAGEBOT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))  # type: ignore[attr-defined]


def _loaded_images(driver: object, css: str) -> int:
    """Count the images matching `css` that the browser has actually decoded."""
    script = "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length"
    return int(driver.execute_script(script, css))  # type: ignore[attr-defined]


def test_a_user_opens_searches_and_rerolls_in_a_browser_and_others_cannot_see(bot: Bot, browser):
    """Open, search, Reroll (also shown in the console), filter by LoRA, copy /imagine; others see nothing."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    bot.say("/imagine a red fox in the snow --seed 7")
    fox_id = int(bot.expect(r"#(\d+) done")[1])
    bot.say("gallery")
    link = bot.expect(r"(http://127\.0\.0\.1:\d+/g/\S+/)")[1]

    # The grid: the image is there, decoded by the browser.
    browser.get(link)
    wait.until(lambda d: _loaded_images(d, ".card img") == 1)
    assert "a red fox in the snow" in browser.find_element(By.CSS_SELECTOR, ".card .prompt").text

    # Search by a prompt word, and by one that matches nothing.
    search = browser.find_element(By.NAME, "q")
    search.send_keys("snow")
    search.submit()
    wait.until(lambda d: "q=snow" in d.current_url)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 1
    search = browser.find_element(By.NAME, "q")
    search.clear()
    search.send_keys("zebra")
    search.submit()
    wait.until(lambda d: "q=zebra" in d.current_url)
    assert browser.find_elements(By.CSS_SELECTOR, ".card") == []
    assert "No images match" in browser.find_element(By.CSS_SELECTOR, ".empty").text

    # The detail view, then Reroll: a new page follows the new image until it arrives.
    browser.get(link)
    browser.find_element(By.CSS_SELECTOR, f"#g{fox_id} .meta a").click()
    wait.until(lambda d: _loaded_images(d, "img.full") == 1)
    assert "Seed" in browser.page_source and ">7<" in browser.page_source
    browser.find_element(By.XPATH, "//button[contains(., 'Reroll')]").click()
    # The new image's page; ?posted=1 says it also went to the chat of the original.
    new_page = r"/i/(\d+)\?posted=1$"
    wait.until(lambda d: re.search(new_page, d.current_url))
    reroll_id = int(re.search(new_page, browser.current_url)[1])  # type: ignore[index]
    assert reroll_id != fox_id
    wait.until(lambda d: _loaded_images(d, "img.full") == 1)
    assert f"#{fox_id}" in browser.find_element(By.CSS_SELECTOR, ".fields").text
    assert "reroll" in browser.find_element(By.CSS_SELECTOR, "h1").text
    # The reroll also shows in the chat where the fox was made: here the console, which prints it.
    assert "also appears in the chat where" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    bot.expect(rf"⏳ #{reroll_id} · seed \d+ · .* · from the gallery")
    bot.expect(rf"#{reroll_id} done")
    _screenshot(browser, "gallery-detail.png")

    # The grid now holds both, newest first.
    browser.get(link)
    wait.until(lambda d: _loaded_images(d, ".card img") == 2)
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert [card.get_attribute("id") for card in cards] == [f"g{reroll_id}", f"g{fox_id}"]
    _screenshot(browser, "gallery-grid.png")
    # Download all: the link fetches a ZIP of both images and the records, under the page's CSP.
    export = browser.find_element(By.CSS_SELECTOR, ".export a").get_attribute("href")
    assert export == f"{link}export.zip"
    fetched = browser.execute_async_script(
        "fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => arguments[1](Array.from(new Uint8Array(b))))",
        export,
    )
    with zipfile.ZipFile(io.BytesIO(bytes(fetched))) as archive:
        assert archive.namelist() == [f"images/{reroll_id}-0.png", f"images/{fox_id}-0.png", "generations.jsonl"]

    # A LoRA image: the LoRA menu shows only it; its Copy /imagine button copies the command that makes it again.
    bot.say("/imagine a pixel owl --seed 9 --lora tiny-lora:0.5")
    owl_id = int(bot.expect(r"#(\d+) done")[1])
    browser.get(link)
    wait.until(lambda d: _loaded_images(d, ".card img") == 3)
    Select(browser.find_element(By.NAME, "lora")).select_by_visible_text("tiny-lora")
    browser.find_element(By.XPATH, "//button[contains(., 'Search')]").click()
    WebDriverWait(browser, 30).until(lambda d: "lora=tiny-lora" in d.current_url)
    assert [card.get_attribute("id") for card in browser.find_elements(By.CSS_SELECTOR, ".card")] == [f"g{owl_id}"]
    origin = re.match(r"http://[^/]+", link)[0]  # type: ignore[index]
    browser.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
    )
    copy = browser.find_element(By.CSS_SELECTOR, f"#g{owl_id} button.copy")
    command = copy.get_attribute("data-copy")
    copy.click()
    WebDriverWait(browser, 30).until(lambda d: copy.text != "Copy /imagine")
    assert copy.text == "Copied"
    copied = browser.execute_async_script("navigator.clipboard.readText().then(arguments[arguments.length - 1])")
    assert copied == command and "--seed 9" in copied and "--lora tiny-lora:0.5" in copied
    # Pasted into a chat (the console), it makes the owl again: the same seed and settings.
    bot.say(copied)
    again_id = int(bot.expect(r"#(\d+) done.* · seed 9$")[1])
    assert again_id > owl_id

    # Another user's link sees none of it, and the id of it is not found.
    other = bot.link_of("discord", "222")
    browser.get(other)
    assert "a red fox" not in browser.page_source and "No images yet" in browser.page_source
    browser.get(f"{other}i/{fox_id}")
    assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text

    # A link given eight days ago shows the expiry page.
    browser.get(bot.link_of("console", getpass.getuser(), days_ago=8))
    assert "This link no longer works" in browser.find_element(By.TAG_NAME, "h1").text


class ServedGallery:
    """The gallery on a port, on the real SQLite stores and service with the recording backend, in a thread.

    Its own event loop runs in a thread, so the synchronous Selenium driver can use the pages
    while `call` runs the service's use cases (a Discord member's /imagine, an admin's rule).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.url = ""
        self.service: object = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise AssertionError("the gallery did not start")

    async def _serve(self) -> None:
        from adapters.gallery import create_app, serving
        from tests.fakes.backend import FakeBackend
        from tests.fakes.service import started_service

        self._stop = asyncio.Event()
        history_path = self.data_dir / "imagebot.sqlite3"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = await SqliteGallery.open(history_path)
        try:
            links = Links(secret=b"browser-test", store=store, base_url="", data_dir=self.data_dir)
            async with started_service(FakeBackend(), self.data_dir, gallery=links) as (service, _):
                app = create_app(service=service, store=store, links=links)
                async with serving(app, "127.0.0.1", 0) as runner:
                    host, port = runner.addresses[0][:2]
                    self.url = f"http://{host}:{port}"
                    links.base_url = self.url
                    self.service = service
                    self._ready.set()
                    await self._stop.wait()
        finally:
            await store.close()

    def call(self, coroutine: object) -> object:
        """Run a coroutine on the gallery's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)  # type: ignore[arg-type]

    def close(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def test_a_member_stars_an_image_and_the_server_sees_it_in_its_showcase_in_a_browser(tmp_path: Path, browser):
    """Star on the detail page; the showcase link shows the image decoded, not the unstarred one; off kills it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bot.jobs import Requester
    from bot.policy import rule_changes

    alice = Requester("discord", "111", workspace="guild-1", channel="chan-1")
    served = ServedGallery(tmp_path / "data")
    service = served.service
    try:

        async def make(prompt: str) -> int:
            job = await service.imagine(prompt, alice)  # type: ignore[attr-defined]
            return int((await job.result()).id)

        async def showcase(on: bool) -> None:
            admin = service.admin  # type: ignore[attr-defined]
            changes = rule_changes(await admin.policy(alice), service.catalog, showcase=on)  # type: ignore[attr-defined]
            await admin.update_policy(alice, changes, may_manage=True)

        fox_id, owl_id = served.call(make("a red fox")), served.call(make("an unstarred owl"))
        served.call(showcase(True))
        own = str(served.call(service.gallery_link(alice)))  # type: ignore[attr-defined]
        shared = str(served.call(service.showcase.link(alice)))  # type: ignore[attr-defined]
        wait = WebDriverWait(browser, 60)

        browser.get(shared)
        assert "No starred images yet" in browser.find_element(By.CSS_SELECTOR, ".empty").text

        browser.get(f"{own}i/{fox_id}")
        browser.find_element(By.XPATH, "//button[contains(., 'Star for the server')]").click()
        wait.until(lambda d: d.find_elements(By.XPATH, "//button[contains(., 'Starred: unstar')]"))

        browser.get(shared)
        wait.until(lambda d: _loaded_images(d, ".card img") == 1)
        assert [card.get_attribute("id") for card in browser.find_elements(By.CSS_SELECTOR, ".card")] == [f"g{fox_id}"]
        assert "an unstarred owl" not in browser.page_source and owl_id != fox_id
        _screenshot(browser, "gallery-showcase.png")

        served.call(showcase(False))
        browser.get(shared)
        assert "This link no longer works" in browser.find_element(By.TAG_NAME, "h1").text
    finally:
        served.close()


def test_a_member_varies_and_remixes_the_second_of_two_images_in_a_browser(tmp_path: Path, browser):
    """ "Act on image 2" under two images, then Vary (Strong): the new image starts from image 2, not the first;
    then the Remix form: new words and a pan of image 2."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bot.jobs import Requester

    alice = Requester("discord", "111", workspace="guild-1", channel="chan-1")
    served = ServedGallery(tmp_path / "data")
    service = served.service
    try:

        async def make() -> tuple[int, list[str]]:
            job = await service.imagine("two foxes --count 2 --seed 7", alice)  # type: ignore[attr-defined]
            made = await job.result()
            # The input each image becomes (its checked PNG's SHA-256), as the chats' `#12.2` names it.
            shas = [(await service.inputs.of_result(made.id, image, "vary")).sha256 for image in made.images]  # type: ignore[attr-defined]
            return int(made.id), shas

        async def made(generation_id: int) -> object:
            return (await service.details(alice, generation_id)).request  # type: ignore[attr-defined]

        foxes_id, shas = served.call(make())  # type: ignore[misc]
        own = str(served.call(service.gallery_link(alice)))  # type: ignore[attr-defined]
        wait = WebDriverWait(browser, 60)

        browser.get(f"{own}i/{foxes_id}")
        wait.until(lambda d: _loaded_images(d, "img.full") == 2)
        assert "act on image 1." in browser.find_element(By.CSS_SELECTOR, ".chosen").text
        browser.find_element(By.LINK_TEXT, "Act on image 2").click()
        wait.until(lambda d: "act on image 2." in d.find_element(By.CSS_SELECTOR, ".chosen").text)
        chosen = browser.find_element(By.LINK_TEXT, "Act on image 2")
        assert chosen.get_attribute("aria-current") == "true"
        browser.find_element(By.XPATH, "//button[contains(., 'Vary (Strong)')]").click()
        new_page = r"/i/(\d+)(\?posted=1)?$"
        wait.until(lambda d: re.search(new_page, d.current_url) and f"/i/{foxes_id}?" not in d.current_url)
        varied_id = int(re.search(new_page, browser.current_url)[1])  # type: ignore[index]
        request = served.call(made(varied_id))
        assert request.init_image == shas[1] != shas[0]  # type: ignore[attr-defined]
        assert "vary" in browser.find_element(By.CSS_SELECTOR, "h1").text

        # Remix (Midjourney's): the prompt re-worded in the card's form, then a pan of image 2 with the new words.
        browser.get(f"{own}i/{foxes_id}?image=2")
        browser.find_element(By.CSS_SELECTOR, "details.remix summary").click()
        words = browser.find_element(By.CSS_SELECTOR, "details.remix textarea")
        wait.until(lambda d: words.is_displayed())
        assert words.get_attribute("value") == "two foxes"
        words.clear()
        words.send_keys("two grey wolves")
        browser.find_element(By.CSS_SELECTOR, "details.remix button[value='pan-left']").click()
        wait.until(lambda d: re.search(new_page, d.current_url) and f"/i/{varied_id}" not in d.current_url)
        remixed = served.call(made(int(re.search(new_page, browser.current_url)[1])))  # type: ignore[index]
        assert remixed.prompt == "two grey wolves" and remixed.init_image == shas[1]  # type: ignore[attr-defined]
        assert remixed.outpaint is not None  # type: ignore[attr-defined]
    finally:
        served.close()


def test_vary_region_keeps_every_pixel_outside_a_box_and_a_lasso_drawn_in_a_browser(bot: Bot, browser):
    """🖌️ Vary (Region) on the real worker: a box dragged and a lasso drawn over the image (Undo takes a part back,
    and it is drawn again); sent, the new image is the old one pixel for pixel outside the parts' mask, new inside."""
    import urllib.request

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from bot.regions import parse_parts, region_mask

    wait = WebDriverWait(browser, WAIT)
    bot.say("/imagine a red fox --seed 7 --steps 4")
    fox_id = int(bot.expect(r"#(\d+) done")[1])
    bot.say("gallery")
    link = bot.expect(r"(http://127\.0\.0\.1:\d+/g/\S+/)")[1]
    browser.get(f"{link}i/{fox_id}")
    wait.until(lambda d: _loaded_images(d, "img.full") == 1)
    browser.find_element(By.PARTIAL_LINK_TEXT, "Vary (Region)").click()
    wait.until(lambda d: d.current_url.endswith(f"/i/{fox_id}/region") and _loaded_images(d, ".editor img") == 1)
    canvas = browser.find_element(By.CSS_SELECTOR, ".editor canvas")
    submit = browser.find_element(By.CSS_SELECTOR, ".region-form button[type=submit]")
    status = browser.find_element(By.CSS_SELECTOR, ".region .selected")
    assert not submit.is_enabled() and status.text == "Nothing selected yet."
    # The editor fits the window's height, so the whole image is in view (gestures start from its middle).
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    inner_height = browser.execute_script("return window.innerHeight")
    shown_width, shown_height = canvas.size["width"], canvas.size["height"]
    assert shown_height <= 0.8 * inner_height

    def at(x: float, y: float) -> ActionChains:
        """Start a gesture at (x, y) of the shown image, as fractions of its sides (offsets are from its middle)."""
        return ActionChains(browser).move_to_element_with_offset(
            canvas, int((x - 0.5) * shown_width), int((y - 0.5) * shown_height)
        )

    def lasso() -> None:
        browser.find_element(By.CSS_SELECTOR, "[data-tool=lasso]").click()
        gesture = at(0.6, 0.6).click_and_hold()
        for x, y in ((0.9, 0.62), (0.92, 0.9), (0.75, 0.95), (0.6, 0.85)):
            gesture = gesture.move_to_element_with_offset(
                canvas, int((x - 0.5) * shown_width), int((y - 0.5) * shown_height)
            )
        gesture.release().perform()

    at(0.1, 0.1).click_and_hold().move_by_offset(int(0.35 * shown_width), int(0.3 * shown_height)).release().perform()
    assert status.text == "1 part selected." and submit.is_enabled()
    lasso()
    assert status.text == "2 parts selected."
    browser.find_element(By.CSS_SELECTOR, "[data-undo]").click()
    assert status.text == "1 part selected."
    lasso()
    selection = browser.find_element(By.NAME, "regions").get_attribute("value")
    assert selection and selection.count(";") == 1
    _screenshot(browser, "gallery-region.png")
    submit.click()
    new_page = r"/i/(\d+)\?posted=1$"
    wait.until(lambda d: re.search(new_page, d.current_url))
    varied_id = int(re.search(new_page, browser.current_url)[1])  # type: ignore[index]
    wait.until(lambda d: _loaded_images(d, "img.full") == 1)  # the page follows the image until it is made
    assert "vary · inpaint" in browser.find_element(By.CSS_SELECTOR, "h1").text
    bot.expect(rf"#{varied_id} done")
    # Before and after: the slider shows the image it was made from over it, from the left.
    browser.find_element(By.CSS_SELECTOR, "details.compare summary").click()
    wait.until(lambda d: _loaded_images(d, "details.compare img") == 2)
    before = browser.find_element(By.CSS_SELECTOR, "details.compare img.before")
    slider = browser.find_element(By.CSS_SELECTOR, "details.compare input[type=range]")
    assert before.value_of_css_property("clip-path") == "inset(0px 50% 0px 0px)"
    slider.send_keys(Keys.END)
    assert before.value_of_css_property("clip-path") == "inset(0px 0% 0px 0px)"
    slider.send_keys(Keys.HOME)
    assert before.value_of_css_property("clip-path") == "inset(0px 100% 0px 0px)"

    def pixels(generation_id: int) -> np.ndarray:
        with urllib.request.urlopen(f"{link}image/{generation_id}-0.png") as response:
            return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"), dtype=np.int16)

    before, after = pixels(fox_id), pixels(varied_id)
    height, width = before.shape[:2]
    mask = np.asarray(Image.open(io.BytesIO(region_mask(parse_parts(selection, width, height), width, height))))
    assert before.shape == after.shape and 0.05 < (mask == 255).mean() < 0.6
    assert np.array_equal(after[mask == 0], before[mask == 0])  # the rest stays as it was
    assert np.abs(after[mask == 255] - before[mask == 255]).mean() > 10  # the parts are new


def test_a_member_ticks_two_images_and_deletes_them_together_in_a_browser(tmp_path: Path, browser):
    """The grid's buttons for several images wait for a box ticked and count them; Delete selected asks first
    (dismissed: nothing goes), then takes both, and the grid says so."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bot.jobs import Requester

    alice = Requester("discord", "111", workspace="guild-1", channel="chan-1")
    served = ServedGallery(tmp_path / "data")
    service = served.service
    try:

        async def make(prompt: str) -> int:
            return int((await (await service.imagine(prompt, alice)).result()).id)  # type: ignore[attr-defined]

        ids = [served.call(make(prompt)) for prompt in ("a red fox", "a snowy owl", "a tiger")]
        own = str(served.call(service.gallery_link(alice)))  # type: ignore[attr-defined]
        wait = WebDriverWait(browser, 60)
        browser.get(own)
        wait.until(lambda d: _loaded_images(d, ".card img") == 3)
        delete = browser.find_element(By.XPATH, "//button[contains(., 'Delete selected')]")
        download = browser.find_element(By.XPATH, "//button[contains(., 'Download selected')]")
        count = browser.find_element(By.CSS_SELECTOR, ".picked .count")
        assert not delete.is_enabled() and not download.is_enabled()
        for generation_id in ids[:2]:
            browser.find_element(By.CSS_SELECTOR, f'input[name="id"][value="{generation_id}"]').click()
        assert count.text == "2 images selected." and delete.is_enabled() and download.is_enabled()

        delete.click()
        browser.switch_to.alert.dismiss()
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 3
        delete.click()
        browser.switch_to.alert.accept()
        wait.until(lambda d: "deleted=2" in d.current_url)
        assert browser.find_element(By.CSS_SELECTOR, ".notice").text == "2 images deleted."
        assert [card.get_attribute("id") for card in browser.find_elements(By.CSS_SELECTOR, ".card")] == [f"g{ids[2]}"]
    finally:
        served.close()


def test_a_box_is_added_by_numbers_from_the_keyboard_on_the_vary_region_page(tmp_path: Path, browser):
    """Without a pointer: four edges in percent and "Add this box" (or Enter in a number) select a part, in the
    image's pixels; Enter there never sends the form; sent, the mask is that box."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from bot.jobs import Requester

    alice = Requester("discord", "111", workspace="guild-1", channel="chan-1")
    served = ServedGallery(tmp_path / "data")
    service = served.service
    try:

        async def make() -> int:
            return int((await (await service.imagine("a fox --size 256x256", alice)).result()).id)  # type: ignore[attr-defined]

        async def made(generation_id: int) -> object:
            return (await service.details(alice, generation_id)).request  # type: ignore[attr-defined]

        fox_id = served.call(make())
        own = str(served.call(service.gallery_link(alice)))  # type: ignore[attr-defined]
        wait = WebDriverWait(browser, 60)
        browser.get(f"{own}i/{fox_id}/region")
        browser.find_element(By.CSS_SELECTOR, "details.by-numbers summary").click()
        status = browser.find_element(By.CSS_SELECTOR, ".region .selected")
        regions = browser.find_element(By.NAME, "regions")
        browser.find_element(By.CSS_SELECTOR, "[data-add-box]").click()
        assert status.text == "1 part selected."
        assert regions.get_attribute("value") == "64,64 192,64 192,192 64,192"
        right = browser.find_element(By.NAME, "box-right")
        right.clear()
        right.send_keys("100", Keys.ENTER)
        assert status.text == "2 parts selected." and f"/i/{fox_id}/region" in browser.current_url
        assert regions.get_attribute("value").endswith(";64,64 256,64 256,192 64,192")
        browser.find_element(By.CSS_SELECTOR, ".region-form button[type=submit]").click()
        wait.until(lambda d: re.search(r"/i/(\d+)$", d.current_url) and "/region" not in d.current_url)
        request = served.call(made(int(re.search(r"/i/(\d+)$", browser.current_url)[1])))  # type: ignore[index]
        assert request.mask_image is not None  # type: ignore[attr-defined]
    finally:
        served.close()
