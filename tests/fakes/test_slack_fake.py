"""Checks FakeSlack against the real slack-sdk and slack-bolt (no imagebot code)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as f:
        yield f


def web_client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_base)


def bolt_app(fake: FakeSlack) -> AsyncApp:
    return AsyncApp(token=fake.bot_token, signing_secret=fake.signing_secret, client=web_client(fake))


async def serve(app: AsyncApp) -> tuple[str, web.AppRunner]:
    async def handle(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", runner


# -- Web API ---------------------------------------------------------------------------------------


async def test_auth_test(fake: FakeSlack) -> None:
    resp = await web_client(fake).auth_test()
    assert resp["user_id"] == "U_BOT" and resp["team_id"] == "T1" and resp["bot_id"]
    call = fake.calls_to("auth.test")[0]
    assert call.token == "xoxb-fake"
    assert "xoxb-fake" not in repr(call)


async def test_post_then_update_records_snapshots(fake: FakeSlack) -> None:
    client = web_client(fake)
    blocks = [{"type": "section", "block_id": "s", "text": {"type": "mrkdwn", "text": "working"}}]
    posted = await client.chat_postMessage(channel="C1", text="working", blocks=blocks, thread_ts="1.000")
    ts = posted["ts"]
    assert posted["channel"] == "C1" and posted["message"]["blocks"] == blocks
    assert posted["message"]["thread_ts"] == "1.000"
    await client.chat_update(channel="C1", ts=ts, text="done", blocks=[])
    msg = fake.messages[("C1", ts)]
    assert msg.text == "done" and msg.thread_ts == "1.000"
    assert msg.updates == [{"text": "working", "blocks": blocks}, {"text": "done", "blocks": []}]
    second = await client.chat_postMessage(channel="C1", text="again")
    assert float(second["ts"]) > float(ts)
    await client.chat_delete(channel="C1", ts=second["ts"])
    assert fake.messages[("C1", second["ts"])].deleted
    assert [m.ts for m in fake.channel_messages("C1")] == [ts]


async def test_ephemeral_reaction_view_and_unknown(fake: FakeSlack) -> None:
    client = web_client(fake)
    resp = await client.chat_postEphemeral(channel="C1", user="U_BOB", text="only you")
    msg = fake.messages[("C1", resp["message_ts"])]
    assert msg.ephemeral_user == "U_BOB" and msg.text == "only you"
    await client.reactions_add(channel="C1", timestamp=resp["message_ts"], name="eyes")
    assert fake.reactions == [("C1", resp["message_ts"], "eyes")]
    view = {"type": "modal", "callback_id": "cb", "title": {"type": "plain_text", "text": "T"}, "blocks": []}
    opened = await client.views_open(trigger_id="t1", view=view)
    view_id = opened["view"]["id"]
    await client.views_update(view_id=view_id, view={**view, "blocks": [{"type": "divider"}]})
    assert fake.views[view_id]["blocks"] == [{"type": "divider"}]
    info = await client.conversations_info(channel="C1")
    assert info["channel"]["id"] == "C1"
    with pytest.raises(Exception, match="unknown_method"):
        await client.api_call("no.such.method")
    assert fake.calls[-1].method == "no.such.method"


async def test_files_upload_v2_bytes_reach_channel(fake: FakeSlack) -> None:
    client = web_client(fake)
    resp = await client.files_upload_v2(
        channel="C1", file=PNG, filename="x.png", initial_comment="here", thread_ts="1700000000.000100"
    )
    assert resp["file"]["name"] == "x.png"
    msgs = [m for m in fake.channel_messages("C1") if m.files]
    assert len(msgs) == 1
    assert msgs[0].files == [("x.png", PNG)]
    assert msgs[0].text == "here" and msgs[0].thread_ts == "1700000000.000100"
    assert all(f.shared for f in fake.uploads.values())
    assert fake.calls_to("upload")[0].files == [("x.png", PNG)]


async def test_wait_for_times_out_with_calls(fake: FakeSlack) -> None:
    await web_client(fake).auth_test()
    with pytest.raises(TimeoutError, match=r"auth\.test"):
        await fake.wait_for(lambda: False, timeout=0.2)


# -- HTTP mode with bolt ---------------------------------------------------------------------------


async def test_bolt_http_mode(fake: FakeSlack) -> None:
    app = bolt_app(fake)
    seen: list[str] = []

    @app.command("/imagine")
    async def on_imagine(ack, command, respond) -> None:
        await ack()
        seen.append(command["text"])
        await respond("queued")

    @app.action("again")
    async def on_again(ack, body) -> None:
        await ack()
        seen.append("action:" + body["actions"][0]["value"] + ":" + body["message"]["text"])

    @app.event("reaction_added")
    async def on_reaction(event) -> None:
        seen.append("reaction:" + event["reaction"])

    @app.shortcut("make")
    async def on_shortcut(ack, shortcut) -> None:
        await ack()
        seen.append("shortcut:" + shortcut["type"])

    @app.view("prompt")
    async def on_view(ack, view) -> None:
        prompt = view["state"]["values"]["p"]["prompt"]["value"]
        if not prompt:
            await ack(response_action="errors", errors={"p": "empty prompt"})
        else:
            await ack()

    url, runner = await serve(app)
    try:
        sent = await fake.send_slash(url, text="a cat")
        assert sent.status == 200
        await fake.wait_for(lambda: "a cat" in seen and fake.calls_to("response_url"))
        assert fake.calls_to("response_url")[0].args["text"] == "queued"

        assert (await fake.send_slash(url, text="x", secret="wrong")).status == 401
        stale = int(time.time()) - 6 * 60
        assert (await fake.send_slash(url, text="x", timestamp=stale)).status == 401

        posted = await web_client(fake).chat_postMessage(channel="C1", text="image")
        sent = await fake.send_block_action(url, "again", "42", user_id="U_BOB", message_ts=posted["ts"])
        assert sent.status == 200
        await fake.wait_for(lambda: "action:42:image" in seen)

        sent = await fake.send_event(
            url,
            {
                "type": "reaction_added",
                "user": "U_ALICE",
                "reaction": "repeat",
                "item": {"type": "message", "channel": "C1", "ts": posted["ts"]},
                "item_user": "U_BOT",
            },
        )
        assert sent.status == 200
        await fake.wait_for(lambda: "reaction:repeat" in seen)

        assert (await fake.send_global_shortcut(url, "make")).status == 200
        await fake.wait_for(lambda: "shortcut:shortcut" in seen)

        bad = await fake.send_view_submission(
            url, "prompt", {"p": {"prompt": {"type": "plain_text_input", "value": ""}}}
        )
        assert bad.status == 200
        assert bad.json == {"response_action": "errors", "errors": {"p": "empty prompt"}}
        good = await fake.send_view_submission(
            url, "prompt", {"p": {"prompt": {"type": "plain_text_input", "value": "dog"}}}
        )
        assert good.status == 200 and good.body == ""
    finally:
        await runner.cleanup()


async def test_message_shortcut_carries_stored_message(fake: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    posted = await web_client(fake).chat_postMessage(channel="C1", text="hi", blocks=blocks)
    payload = fake.message_shortcut_payload("remix", message_ts=posted["ts"])
    assert payload["message"]["text"] == "hi"
    assert payload["message"]["blocks"] == blocks
    assert payload["message"]["bot_id"] == fake.bot_id


# -- Socket Mode -----------------------------------------------------------------------------------


async def test_socket_mode_handler(fake: FakeSlack) -> None:
    app = bolt_app(fake)
    seen: list[str] = []

    @app.command("/imagine")
    async def on_imagine(ack, command) -> None:
        await ack()
        seen.append(command["text"])

    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    try:
        await fake.wait_socket()
        assert fake.calls_to("apps.connections.open")[0].token == fake.app_token
        ack = await fake.socket_send("slash_commands", fake.slash_payload(text="via socket"))
        # the client acked exactly the envelope it was sent
        assert ack["envelope_id"] == fake.sockets[-1].sent[-1]["envelope_id"]
        await fake.wait_for(lambda: "via socket" in seen)
    finally:
        await handler.close_async()
        await asyncio.sleep(0)
