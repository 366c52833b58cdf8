"""deploy/slack-manifest.yaml declares exactly the commands, shortcuts, events and scopes the app uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from adapters.slack import EVENTS_PATH
from adapters.slack._app import EVENTS
from adapters.slack._blocks import (
    BLEND_SHORTCUT,
    COMMAND,
    DESCRIBE_SHORTCUT,
    FROM_IMAGE_SHORTCUT,
    GENERATE_SHORTCUT,
    GUIDE_SHORTCUT,
    PNG_INFO_SHORTCUT,
    REFINE_SHORTCUT,
    REROLL_SHORTCUT,
    STYLE_SHORTCUT,
)
from tests.adapters.slack.conftest import Running, action_ids

MANIFEST = yaml.safe_load((Path(__file__).parents[3] / "deploy" / "slack-manifest.yaml").read_text())

# The bot scope each Web API method needs (Slack's method reference); None: no scope.
METHOD_SCOPES = {
    "auth.test": None,
    "views.open": None,
    "upload": None,  # the upload URL handed out by files.getUploadURLExternal
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files.delete": "files:write",
    "files.info": "files:read",
    "files.list": "files:read",
    "users.info": "users:read",
}
EVENT_SCOPES = {"reaction_added": "reactions:read", "reaction_removed": "reactions:read"}


def test_manifest_declares_the_code_s_command_shortcuts_and_events() -> None:
    features, settings = MANIFEST["features"], MANIFEST["settings"]
    assert [command["command"] for command in features["slash_commands"]] == [COMMAND]
    assert {s["callback_id"]: s["type"] for s in features["shortcuts"]} == {
        GENERATE_SHORTCUT: "global",
        REROLL_SHORTCUT: "message",
        REFINE_SHORTCUT: "message",
        FROM_IMAGE_SHORTCUT: "message",
        GUIDE_SHORTCUT: "message",
        STYLE_SHORTCUT: "message",
        PNG_INFO_SHORTCUT: "message",
        DESCRIBE_SHORTCUT: "message",
        BLEND_SHORTCUT: "message",
    }
    assert all(len(s["name"]) <= 24 and len(s["description"]) <= 80 for s in features["shortcuts"])
    assert tuple(settings["event_subscriptions"]["bot_events"]) == EVENTS
    assert settings["socket_mode_enabled"] is True and settings["interactivity"]["is_enabled"] is True
    urls = [features["slash_commands"][0]["url"], settings["event_subscriptions"]["request_url"]]
    urls.append(settings["interactivity"]["request_url"])
    assert all(url.endswith(EVENTS_PATH) for url in urls)


async def test_every_declared_entry_has_a_listener_and_nothing_else_does(running: Running) -> None:
    """Bolt answers 404 to a request no listener takes: each manifest entry gets a 200, an unknown one a 404."""
    fake, url = running.fake, running.url
    assert (await fake.send_slash(url, command=COMMAND, text="help")).status == 200
    for shortcut in MANIFEST["features"]["shortcuts"]:
        send = fake.send_global_shortcut if shortcut["type"] == "global" else fake.send_message_shortcut
        assert (await send(url, shortcut["callback_id"])).status == 200, shortcut
    for event in MANIFEST["settings"]["event_subscriptions"]["bot_events"]:
        payload = {**fake.reaction_event("x", message_ts="1.000001"), "type": event}
        assert (await fake.send_event(url, payload)).status == 200
    assert (await fake.send_global_shortcut(url, "no_such_shortcut")).status == 404
    assert (await fake.send_slash(url, command="/other")).status == 404


async def test_the_scopes_are_exactly_those_the_calls_need(running: Running) -> None:
    """Every Web API method the app calls in a full session is covered by a declared scope, and no scope is idle."""
    fake, url = running.fake, running.url
    await fake.send_slash(url, text="a red fox --steps 2")
    card = await running.finished_card(1)
    await fake.send_global_shortcut(url, GENERATE_SHORTCUT)
    await fake.send_slash(url, text="help")
    await fake.send_slash(url, text="admin max_steps 40")
    image = fake.share_file("fox.png", (running.data_dir / "images").glob("**/*.png").__next__().read_bytes())
    state = {
        "prompt": {"value": {"type": "plain_text_input", "value": "a fox --steps 2"}},
        "image": {"value": {"type": "file_input", "files": [fake.file_object(image)]}},
    }
    await fake.send_view_submission(url, "imagine_modal", state)
    (delete,) = action_ids(card, "ib:delete:")
    value = next(e["value"] for b in card.blocks or [] for e in b.get("elements") or [] if e.get("action_id") == delete)
    await fake.send_block_action(url, delete, value, message_ts=card.ts)
    await fake.wait_for(
        lambda: (
            fake.calls_to("files.delete")
            and fake.calls_to("views.open")
            and fake.calls_to("users.info")
            and fake.downloads
        )
    )
    called = {call.method for call in fake.calls}
    assert called - set(METHOD_SCOPES) == set(), "a method without a known scope was called"
    needed = {METHOD_SCOPES[method] for method in called} - {None}
    needed |= {"commands"} | {EVENT_SCOPES[event] for event in EVENTS}
    assert set(MANIFEST["oauth_config"]["scopes"]["bot"]) == needed
