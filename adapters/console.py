"""The terminal chat: the same service as Discord and Slack, driven by lines of text.

Commands (a leading ``/`` is optional)::

    /imagine a red fox --seed 7 --refiner 90     queue a generation
    /imagine a (red:1.3) fox, [blurry] sky       A1111's weights: (words) ×1.1, [words] ÷1.1, BREAK
    /imagine a fox <lora:pixel-art:0.8>          A1111's LoRA tags: the same as --lora pixel-art:0.8
    /imagine a {red, blue} fox --ar {1:1, 16:9}   every combination, a job each (Midjourney's permutations)
    reroll [#id]                                 same settings, new seed (default: your latest)
    refine [#id] [percent]                       same seed, refiner from percent (default 85)
    vary subtle|strong [#id[.n]]                 the image again with a new seed, a little or a lot changed
    upscale [#id[.n]] [2|4]                      a larger copy (default: your latest, 2×)
    zoom [#id[.n]] [factor]                      zoom out: the same size, a new border around it (1.5×)
    pan left|right|up|down [#id[.n]]             extend the canvas that way by half the image's side
    square [#id[.n]]                             make square: the short side grown to the long one
    guide [#id]                                  the guide images a generation's ControlNets saw
    blend #3 a.png [#5] [prompt --flags]         one image of 2 or 3 (Midjourney's /blend, the model's IP-Adapter)
    describe [#id[.n] | FILE]                    an image in words, to send with /imagine (default: your latest)
    /imagine a fox --image photo.png --strength 0.6   start from an image: a file, or #id[.n]
    cancel [#id]                                 cancel a queued or running image (default: your newest)
    queue                                        how many images wait, and where yours are
    history [count]                              your recent generations
    info [#id]                                   everything about one (default: your latest)
    edit [#id]                                   its /imagine text, to change and send (default: your latest)
    pnginfo FILE                                 how a PNG, JPEG or WebP was made (A1111, ComfyUI, us): its /imagine
    settings [key=value …]                       show or change your defaults
    prefer [NAME [--flags… | none]]              your option sets: prefer mine --ar 2:3, then /imagine a fox --mine
    forget [confirm]                             delete all your images, seeds and settings
    gallery [revoke]                             a private link to your images on the web (revoke: kill old links)
    star [#id], unstar [#id]                     put your image in the server's showcase, or take it out
    loras [search]                               the LoRAs to name with --lora, and their trigger words
    wildcards [search]                           the wildcards a prompt draws a line from (__name__)
    help, quit

It reads stdin line by line (so it can be scripted) and handles one command at
a time, drawing a progress bar while a job runs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TextIO

from bot.actions import format_ref
from bot.chat import ChatFlow, EditForm, Guides, Listing, Reply, Started, Text, refusal
from bot.errors import InvalidOption, shown
from bot.history import Generation
from bot.images import input_path, too_large
from bot.jobs import Job, JobEvent, Requester, progress_bar
from bot.options import flags_help
from bot.service import ImageService
from bot.summary import refiner_part

__all__ = ["ConsoleChat"]

log = logging.getLogger(__name__)

HELP = (
    __doc__.split("Commands (a leading ``/`` is optional)::", 1)[1].split("It reads", 1)[0].rstrip()
    + "\n\n  /imagine flags:\n"
    + flags_help()
)


class ConsoleChat:
    """A chat session in the terminal for one local user.

    Args:
        service: the image service.
        who: the user this terminal speaks for.
        out: where replies go.
        data_dir: image paths are shown relative to the current directory through it.
    """

    def __init__(self, service: ImageService, who: Requester, out: TextIO, data_dir: Path) -> None:
        self._service = service
        self._who = who
        self._out = out
        self._data_dir = data_dir
        self._live = out.isatty()
        self._flow = ChatFlow(service, mention=str)
        self._posted: set[asyncio.Task[None]] = set()

    def say(self, text: str = "") -> None:
        """Write one reply line."""
        self._out.write(text + "\n")
        self._out.flush()

    async def run(self, stdin: TextIO) -> None:
        """Handle lines until end of input or ``quit``; meanwhile print what the gallery starts."""
        if stdin.isatty():
            self.say("imagebot console: type /imagine <prompt>, or help.")
        for job, _ in self._service.resumed(self._who.platform):
            if job.requester.key == self._who.key:
                self.say(f"{format_ref(job.id)} resumed after a restart; `history` shows it when it is done.")
        self._service.add_poster(self._who.platform, self)
        try:
            while True:
                line = await asyncio.to_thread(stdin.readline)
                if not line or line.strip().lower() in ("quit", "exit", "/quit", "/exit"):
                    return
                await self.handle(line)
        finally:
            self._service.remove_poster(self._who.platform, self)
            for task in self._posted:
                task.cancel()

    async def post(self, job: Job, text: str) -> None:
        """Print a job started outside the console (a gallery click), and its outcome when it comes.

        The `bot.ports.ChatPoster` of the console; returns at once. Only the outcome is printed,
        not a progress bar, which would run through the lines of the command being typed.
        """
        self.say(text)

        async def outcome() -> None:
            async for event in job.events():
                if event.final:
                    self._render(event, None)

        task = asyncio.create_task(outcome())
        self._posted.add(task)
        task.add_done_callback(self._posted.discard)

    async def retract(self, generation: Generation, text: str) -> None:
        """Print that a generation was deleted in the gallery (`bot.ports.ChatPoster`); a terminal keeps its lines."""
        self.say(text)

    async def handle(self, line: str) -> bool:
        """Run one command line and tell whether it succeeded; mistakes become one sentence, never a traceback."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        word = word.lower().lstrip("/")
        try:
            if word == "help":
                self.say(HELP)
                return True
            if word == "imagine":
                return await self._show(await self._flow.imagine(self._who, rest.strip(), load=self._read_file))
            if word == "pnginfo":
                path = rest.strip()
                return await self._show(
                    await self._flow.png_info(await self._read_file(path, "image"), Path(path).name)
                )
            reply = await self._flow.text(self._who, f"{word} {rest}", strict=True, load=self._read_file)
            if reply is None:
                raise InvalidOption("Command", f"'{word[:40]}' is unknown (try help)")
            return await self._show(reply)
        except BrokenPipeError:
            raise  # nobody reads the replies any more; the command line ends quietly
        except Exception as error:
            self.say(refusal(error, f"console command {word[:40]!r}"))
        return False

    async def _read_file(self, ref: str, option: str) -> bytes:
        """Read an ``--image``/``--mask`` file: the console is the operator's own terminal, the one chat with paths."""
        path = Path(ref).expanduser()
        try:
            size = path.stat().st_size
            if size > self._service.max_input_bytes:
                raise too_large(option, size, self._service.max_input_bytes)
            return await asyncio.to_thread(path.read_bytes)
        except OSError as error:
            raise InvalidOption(option, f"'{shown(ref)}' cannot be read ({error.strerror or 'error'})") from None

    async def _show(self, reply: Reply) -> bool:
        """Render the chat flow's reply as terminal lines; True unless a job failed."""
        if isinstance(reply, Started):
            # One after the other, as the queue runs them: each job's events are kept until read.
            made = [await self._follow(job) for job in reply.jobs]
            return all(made)
        if isinstance(reply, Listing):
            if not reply.generations:
                self.say("No images yet; make one with /imagine <prompt>.")
            for generation in reply.generations:
                request = generation.request
                origin = f" of {format_ref(generation.parent_id)}" if generation.parent_id else ""
                self.say(
                    f"{format_ref(generation.id)} {generation.action}{origin} · {generation.status} · "
                    f"seed {generation.seed} · {request.model}{refiner_part(request)} · {request.prompt[:60]!r}"
                )
                for image in generation.images:
                    self.say(f"    {self._data_dir / image.path}")
        elif isinstance(reply, Guides):
            for guide in reply.images:
                self.say(guide.label)
                self.say(f"    {self._data_dir / input_path(guide.sha256)}")
        elif isinstance(reply, EditForm):
            self.say(reply.line)
        elif isinstance(reply, Text):
            # A code block's fences are chat markup; a terminal shows the block as it is.
            self.say("\n".join(line for line in reply.text.splitlines() if line != "```"))
        return True

    async def _follow(self, job: Job) -> bool:
        """Show a job's events until it ends; True if it made its images."""
        self.say(f"{format_ref(job.id)} queued · seed {job.request.seed} · {job.request.model}")
        for warning in job.warnings:
            self.say(f"  ⚠ {warning}")
        last: JobEvent | None = None
        async for event in job.events():
            self._render(event, last)
            last = event if event.kind == "progress" else last
        return job.succeeded

    def _render(self, event: JobEvent, last: JobEvent | None) -> None:
        if event.kind == "queued" and event.position and event.position > 1:
            self.say(f"  position {event.position} in the queue")
        elif event.kind == "progress" and event.progress is not None:
            progress = event.progress
            line = (
                f"  {progress.stage:<7} {progress_bar(progress.step, progress.total)} {progress.step}/{progress.total}"
            )
            if self._live:
                self._out.write("\r" + line)
                self._out.flush()
            elif progress.step == progress.total:
                self.say(line)
        elif event.final:
            if self._live and last is not None:
                self._out.write("\n")
            if event.kind == "done" and event.generation is not None:
                generation = event.generation
                seconds = f" in {generation.seconds:.2f} s" if generation.seconds is not None else ""
                self.say(f"{format_ref(generation.id)} done{seconds} · seed {generation.seed}")
                for image in generation.images:
                    self.say(f"  {self._data_dir / image.path}")
            else:
                self.say(f"✖ {event.message}")
