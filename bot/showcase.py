"""A server's showcase: the images their authors starred, on one web page for the whole server.

Only an image's author stars it (⭐ on its message, ``star #12``, or the gallery's button);
only a server's managers turn the showcase on (the admin setting ``showcase``). The page
shows the starred generations of that server and, of each, only the images the safety
check did not flag. Anyone with the server's link may read it; turning the showcase off
kills the link, and turning it on again makes a new one (`Policy.showcase_since`).
"""

from __future__ import annotations

from bot.actions import format_ref
from bot.admin import ServerAdmin, managers, server_word
from bot.errors import GalleryOff, InvalidOption
from bot.history import Generation
from bot.jobs import Requester
from bot.ports import GalleryLinks, GenerationStore

__all__ = ["Showcase", "showcase_line"]


def showcase_line(who: Requester, link: str) -> str:
    """Return the answer to ``gallery showcase``: the server's link and what it shows to whom."""
    return (
        f"This {server_word(who)}'s showcase: {link}\n"
        "It shows the images their authors starred (⭐ on an image, or `star #id`); anyone with the link can see it."
    )


class Showcase:
    """Stars images for their server's showcase, and gives the showcase's link.

    Args:
        generations: where the stars are kept.
        admin: reads whether a server's showcase is on.
        links: makes the links (None: the operator serves no web gallery).
    """

    def __init__(self, generations: GenerationStore, admin: ServerAdmin, links: GalleryLinks | None) -> None:
        self._generations = generations
        self._admin = admin
        self._links = links

    async def star(self, who: Requester, generation: Generation, *, starred: bool = True) -> str:
        """Star one of the user's own images, finished, or unstar it; return what that means.

        `generation` is the user's own (`ImageService.star` finds it, as every action on an image does).
        """
        action = "star" if starred else "unstar"
        ref = format_ref(generation.id)
        if starred and generation.status != "done":
            raise InvalidOption(action, f"takes a finished image, and {ref} is {generation.status}", typed=True)
        await self._generations.set_starred(generation.id, starred)
        showing = await self._showing(generation)
        if not starred:
            return f"☆ {ref} is no longer starred" + (
                f"; it has left the {server_word(who)}'s showcase." if showing else "."
            )
        if generation.workspace is None:
            return (
                f"⭐ {ref} is starred. Only images made in a {server_word(who)} go to a showcase,"
                " not those of direct messages."
            )
        if not any(not image.nsfw for image in generation.images):
            return f"⭐ {ref} is starred, but flagged images never go to the showcase."
        if not showing:
            return (
                f"⭐ {ref} is starred; it shows in this {server_word(who)}'s showcase once {managers(who)} turn it on."
            )
        return f"⭐ {ref} is starred and shows in the {server_word(who)}'s showcase."

    async def link(self, who: Requester) -> str:
        """Return the user's server's showcase link.

        Raises:
            GalleryOff: this bot serves no web gallery.
            InvalidOption: outside a server, or its showcase is off.
        """
        if self._links is None:
            raise GalleryOff()
        if who.workspace is None:
            raise InvalidOption("A showcase", f"belongs to a {server_word(who)}; ask for it there, not here")
        policy = await self._admin.policy(who)
        if policy.showcase_since is None:
            raise InvalidOption(
                f"This {server_word(who)}'s showcase",
                f"is off; {managers(who)} can turn it on (admin setting showcase)",
            )
        return await self._links.showcase_link(who.platform, who.workspace, policy.showcase_since)

    async def _showing(self, generation: Generation) -> bool:
        """Tell whether the generation's server has its showcase on."""
        if generation.workspace is None:
            return False
        policy = await self._admin.server_policy(generation.platform, generation.workspace)
        return policy.showcase_since is not None
