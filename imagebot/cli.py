"""The ``imagebot`` command: one-shot commands, the console chat, and ``run``.

The one-shot commands are the console chat's commands run once, so the CLI,
the console and every chat platform share one history and one syntax::

    imagebot generate a red fox --seed 7     # = /imagine a red fox --seed 7
    imagebot reroll '#12'
    imagebot refine '#12' 90
    imagebot history
    imagebot chat                            # the terminal chat on stdin
    imagebot run                             # Discord and/or Slack where their tokens are set, else the console
    imagebot backends                        # what each backend can make, and which one is configured
    imagebot env-example                     # every setting, its default and its help (deploy/.env.example)
    imagebot doctor                          # check the configuration; non-zero exit on any failure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from adapters.console import ConsoleChat
from bot.config import CoreSettings, GallerySettings, ModelsLabSettings, RunwareSettings, env_example, settings_problem
from bot.jobs import Requester
from bot.logs import setup_logging
from bot.options import flags_help
from bot.plugins import ConfigurationError
from imagebot.bootstrap import App, bootstrap, freeze_startup_heap
from imagebot.plugins import chat_plugins

__all__ = ["main"]

log = logging.getLogger("imagebot")

NO_CHATS = (
    "imagebot: no chat credentials are set (IMAGEBOT_DISCORD_TOKEN, or IMAGEBOT_SLACK_BOT_TOKEN with an app token"
    " or signing secret), so this is the console chat: type /imagine <prompt>, or help."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagebot", description="Image generation for chats.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate",
        help="make an image: a prompt and --flags, as in /imagine",
        usage="imagebot generate PROMPT [--flag VALUE …]",
        epilog="flags:\n" + flags_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("text", nargs=argparse.REMAINDER, metavar="PROMPT", help="the prompt, then its flags")
    reroll = commands.add_parser("reroll", help="same settings, new seed: [#id] (default: your latest)")
    reroll.add_argument("text", nargs="*")
    refine = commands.add_parser("refine", help="same seed, with the refiner: [#id] [percent]")
    refine.add_argument("text", nargs="*")
    history = commands.add_parser("history", help="your recent generations")
    history.add_argument("text", nargs="*")
    commands.add_parser("chat", help="the terminal chat, reading commands from stdin")
    commands.add_parser("run", help="start the chat adapters whose credentials are set (else the console)")
    commands.add_parser("backends", help="what each backend can make, and which one is configured")
    doctor = commands.add_parser("doctor", help="check the configuration, the GPU, the models and the APIs")
    doctor.add_argument(
        "--running", action="store_true", help="as a health check of a running bot (its worker holds GPU memory)"
    )
    commands.add_parser("env-example", help="every setting with its default and help, as deploy/.env.example")
    return parser


def console_user() -> Requester:
    """Return the terminal's user: the CLI and the console chat share this history."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "local"
    return Requester(platform="console", user_id=name)


def backends_text(core: CoreSettings) -> str:
    """Return the capability table of every backend, marking the configured one and whether its key is set."""
    from inference.capabilities import CAPABILITIES

    keys = {"runware": RunwareSettings().api_key, "modelslab": ModelsLabSettings().api_key}
    columns = list(CAPABILITIES.values())
    head = [
        "",
        *(
            c.name
            + (" (configured)" if c.name == core.backend else "")
            + ("" if c.name not in keys else (", key set" if keys[c.name] else ", no key"))
            for c in columns
        ),
    ]
    table = [head] + [[feature, *(dict(c.rows())[feature] for c in columns)] for feature, _ in columns[0].rows()]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table
    )


async def _main(command: str, text: str) -> int:
    core = CoreSettings()
    if command == "backends":
        print(backends_text(core))
        return 0
    serves = command in ("run", "chat")
    try:
        app: App = await bootstrap(
            core,
            gallery=GallerySettings() if serves else None,
            announce=lambda notice: print(notice, file=sys.stderr),
            warm=serves,
        )
    except ConfigurationError as error:
        print(f"imagebot: {error}", file=sys.stderr)
        return 2
    if core.metrics_port is not None and serves:
        from bot import metrics

        metrics.serve(core.metrics_host, core.metrics_port)
        log.info("metrics on http://%s:%d/metrics", core.metrics_host, core.metrics_port)
    chat = ConsoleChat(app.service, console_user(), sys.stdout, core.data_dir)
    # systemd and docker stop with SIGTERM: close the worker and the database as for Ctrl-C.
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        async with contextlib.AsyncExitStack() as serving:
            if app.gallery is not None:
                await serving.enter_async_context(app.gallery.serving(app.service))
                log.info("gallery on %s", app.gallery.links.base_url)
            return await _serve(app, command, text, chat)
    except asyncio.CancelledError:
        log.info("stopping")
    finally:
        await app.aclose()
    return 0


async def _serve(app: App, command: str, text: str, chat: ConsoleChat) -> int:
    """Run the chats (or the console, or one command) until they end or are cancelled."""
    chats = _chats(app) if command == "run" else []
    if chats:
        freeze_startup_heap()
        # Each runs until stopped; one failing (a bad token) stops the others.
        async with asyncio.TaskGroup() as group:
            for chat_run in chats:
                group.create_task(chat_run)
    elif command in ("chat", "run"):
        if command == "run":
            print(NO_CHATS, file=sys.stderr)
        await chat.run(sys.stdin)
    else:
        word = "imagine" if command == "generate" else command
        return 0 if await chat.handle(f"{word} {text}") else 1
    return 0


def _chats(app: App) -> list[Coroutine[Any, Any, None]]:
    """Return the chats whose credentials are set, ready to run (their SDKs imported as they start)."""
    return [chat.run(app.service, app.data_dir) for chat in chat_plugins().values() if chat.configured()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``imagebot`` command line."""
    args = _parser().parse_args(argv)
    if args.command == "env-example":
        sys.stdout.write(env_example())
        return 0
    if args.command == "doctor":
        from imagebot.doctor import check_all, report

        checks = asyncio.run(check_all(running=args.running))
        print(report(checks))
        return 0 if all(check.ok for check in checks) else 1
    problem = settings_problem()
    if problem is not None:
        print(f"imagebot: {problem}", file=sys.stderr)
        return 2
    setup_logging(CoreSettings(), sys.stderr)
    text = " ".join(getattr(args, "text", []))
    try:
        return asyncio.run(_main(args.command, text))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`imagebot history | head -1`): what it read was all it wanted.
        # Python flushes stdout again at exit, so point it at /dev/null first (Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
