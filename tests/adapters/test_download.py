"""Fetching a user's image from a chat's file host: only there, no redirects, bounded in time and bytes."""

from __future__ import annotations

import pytest

from adapters._download import FileHosts, download
from bot.errors import InvalidOption
from tests.fakes.files import FileHost

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


@pytest.fixture
async def home():
    async with FileHost() as host:
        yield host


@pytest.fixture
async def elsewhere():
    async with FileHost() as host:
        yield host


def _hosts(host: FileHost) -> FileHosts:
    return FileHosts.of(["files.example.com"], api_base=host.base + "/api/")


def test_only_https_on_the_chat_s_hosts_or_the_loopback_api_base_is_allowed():
    hosts = FileHosts.of(["cdn.discordapp.com"], api_base="http://127.0.0.1:8080/api/v10")
    assert hosts.allows("https://cdn.discordapp.com/attachments/1/2/a.png")
    assert hosts.allows("https://CDN.discordapp.com:443/a.png")
    assert hosts.allows("http://127.0.0.1:8080/attachments/1/a.png")
    assert not hosts.allows("http://cdn.discordapp.com/a.png")  # plain http off loopback
    assert not hosts.allows("https://cdn.discordapp.com:8443/a.png")
    assert not hosts.allows("https://cdn.discordapp.com.evil.example/a.png")
    assert not hosts.allows("https://user:pw@cdn.discordapp.com/a.png")
    assert not hosts.allows("http://127.0.0.1:9090/a.png")  # another loopback port is another host
    assert not hosts.allows("file:///etc/passwd")
    assert not hosts.allows("/attachments/1/a.png")
    # an API base on plain http off loopback moves nothing: the token would travel in the clear
    assert FileHosts.of([], api_base="http://slack.example/api/").origins == frozenset()


async def test_fetches_from_the_api_base_s_origin_with_the_headers(home):
    url = home.put("f/a.png", PNG)
    data = await download(url, option="image", hosts=_hosts(home), limit=1000, headers={"Authorization": "Bearer t"})
    assert data == PNG
    assert [(r.path, r.authorization) for r in home.requests] == [("f/a.png", "Bearer t")]


async def test_a_foreign_host_is_refused_before_any_request_and_gets_no_token(home, elsewhere):
    url = elsewhere.put("a.png", PNG)
    with pytest.raises(InvalidOption) as refused:
        await download(url, option="image", hosts=_hosts(home), limit=1000, headers={"Authorization": "Bearer t"})
    assert str(refused.value) == "Image is not on the chat's own file host, so it was not fetched."
    assert elsewhere.requests == []


async def test_a_redirect_is_not_followed(home, elsewhere):
    target = elsewhere.put("a.png", PNG)
    url = home.redirect("f/a.png", target)
    with pytest.raises(InvalidOption) as refused:
        await download(url, option="mask", hosts=_hosts(home), limit=1000, headers={"Authorization": "Bearer t"})
    assert str(refused.value) == "Mask could not be fetched: the file host sent it elsewhere."
    assert elsewhere.requests == []


async def test_a_declared_length_over_the_limit_is_refused(home):
    url = home.put("f/big.png", PNG * 20)
    with pytest.raises(InvalidOption) as refused:
        await download(url, option="image", hosts=_hosts(home), limit=1000)
    assert str(refused.value) == "Image is 2.2 KB; the most is 1000 bytes."


async def test_a_body_without_length_stops_being_read_past_the_limit(home):
    """The host would send 256 MB; the download stops after the limit and the host sees it hang up."""
    most = 256 * 1024 * 1024
    url = home.stream("f/endless.png", most)
    with pytest.raises(InvalidOption) as refused:
        await download(url, option="image", hosts=_hosts(home), limit=100_000)
    assert str(refused.value).startswith("Image is ")
    assert str(refused.value).endswith("; the most is 97.6 KB.")
    assert home.streamed["f/endless.png"] < most


async def test_a_host_that_answers_too_slowly_is_given_up_on(home):
    url = home.slow("f/slow.png", PNG, gap=0.1)  # 20 pieces: 2 s in all
    with pytest.raises(InvalidOption) as refused:
        await download(url, option="image", hosts=_hosts(home), limit=1000, timeout=0.5)
    assert str(refused.value) == "Image could not be fetched from the chat; try again."


async def test_an_error_status_is_one_sentence(home):
    with pytest.raises(InvalidOption) as refused:
        await download(home.base + "/missing.png", option="image", hosts=_hosts(home), limit=1000)
    assert str(refused.value) == "Image could not be fetched (the file host answered HTTP 404)."
