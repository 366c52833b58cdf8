"""Server administration: each server's rules, checked before a job is queued, its daily quotas, its audit log.

A server is a Discord guild or a Slack workspace; outside one (direct messages,
the console) the empty policy applies and nothing is audited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from bot.errors import ContentBlocked, InvalidOption, NotAllowed, QuotaReached
from bot.history import AuditEntry, Generation
from bot.jobs import Requester
from bot.policy import Display, Policy
from bot.ports import GenerationStore, PolicyStore
from bot.request import GenerationRequest

__all__ = ["ServerAdmin", "managers", "server_word"]

log = logging.getLogger(__name__)


def server_word(who: Requester) -> str:
    """Return what the user's platform calls a community: a Slack workspace, a Discord server."""
    return "workspace" if who.platform == "slack" else "server"


def managers(who: Requester) -> str:
    """Return who may change a community's rules, in the platform's words."""
    return "workspace admins" if who.platform == "slack" else "server managers"


def _change_text(key: str, value: object) -> str:
    """Return a rule change for the audit log, as its admin word says it (the showcase's time as on or off)."""
    if key == "showcase_since":
        return f"showcase={'on' if value is not None else 'off'}"
    return f"{key}={value}"


class ServerAdmin:
    """Reads, checks and changes servers' rules, and keeps their audit log.

    Args:
        policies: where rules and audit entries are kept.
        generations: counts the images a server made today, for the quotas.
        daily_quota: images one server may make per UTC day (0: no limit).
        clock: the wall clock.
    """

    def __init__(
        self,
        policies: PolicyStore,
        generations: GenerationStore,
        *,
        daily_quota: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policies = policies
        self._generations = generations
        self._daily_quota = daily_quota
        self._clock = clock

    async def policy(self, who: Requester) -> Policy:
        """Return the policy of the user's server (the empty policy outside a server)."""
        return await self._policy_of(who.platform, who.workspace)

    async def server_policy(self, platform: str, workspace: str) -> Policy:
        """Return a server's policy by its ids (a showcase page has no requester)."""
        return await self._policy_of(platform, workspace)

    async def _policy_of(self, platform: str, workspace: str | None) -> Policy:
        if workspace is None:
            return Policy()
        return Policy.load(await self._policies.get(platform, workspace))

    async def update_policy(self, who: Requester, changes: Mapping[str, object], *, may_manage: bool) -> Policy:
        """Check and save some of the server's policy; `may_manage` is the platform's admin check."""
        if who.workspace is None:
            raise InvalidOption("Server settings", "only exist in a server, not in direct messages")
        if not may_manage:
            raise NotAllowed("change", only=managers(who), what=f"the {server_word(who)}'s settings")
        current = await self.policy(who)
        if "showcase_since" in changes:
            # On: since now, or since it was turned on, if it already was (its link keeps working).
            turned_on = changes["showcase_since"] is True
            since = current.showcase_since or int(self._clock() * 1000)
            changes = {**changes, "showcase_since": since if turned_on else None}
        policy = current.changed(changes)
        await self._policies.put(who.platform, who.workspace, policy.model_dump(mode="json"))
        await self.audit(who, "rules", detail=", ".join(_change_text(key, changes[key]) for key in sorted(changes)))
        log.info(
            "server policy of %s:%s changed by %s: %s",
            who.platform,
            who.workspace,
            who.user_id,
            ", ".join(sorted(changes)),
            extra={"user_id": who.user_id, "platform": who.platform},
        )
        return policy

    async def displays(self, generation: Generation, *, age_restricted: bool = False) -> tuple[Display, ...]:
        """Return how each image of a generation is shown where it is posted (`Policy.display`).

        `age_restricted` is the platform's flag of the generation's channel; a private
        generation goes to a direct message, which is never age-restricted.
        """
        policy = await self._policy_of(generation.platform, generation.workspace)
        adult = not generation.private and policy.is_age_restricted(generation.channel, age_restricted)
        return tuple(policy.display(image.nsfw, adult) for image in generation.images)

    async def check(self, who: Requester, request: GenerationRequest, flagged_inputs: Sequence[str] = ()) -> Policy:
        """Return the server's rules, or raise when the request breaks them (a banned prompt is audited).

        `flagged_inputs`: the request's input images whose stored safety verdict is flagged (`Policy.check`).
        """
        policy = await self.policy(who)
        policy.check_channel(None if who.direct else who.channel, managers(who))
        try:
            adult = policy.is_age_restricted(who.channel, who.age_restricted)
            policy.check(request, age_restricted=adult, flagged_inputs=flagged_inputs)
        except ContentBlocked as blocked:
            await self.audit(who, "blocked", detail=blocked.rule)
            log.warning(
                "blocked a request of %s:%s in %s (%s)",
                who.platform,
                who.user_id,
                who.workspace,
                blocked.rule,
                extra={"user_id": who.user_id, "platform": who.platform},
            )
            raise
        return policy

    async def check_quota(self, who: Requester, count: int, policy: Policy) -> None:
        """Raise `QuotaReached` when the server, or the user in it, has no images left today (UTC)."""
        if who.workspace is None:
            return
        now = self._clock()
        midnight = now - now % 86400
        where = server_word(who)
        if self._daily_quota:
            made = await self._generations.images_since(who.platform, who.workspace, midnight)
            if made + count > self._daily_quota:
                left = max(0, self._daily_quota - made)
                raise QuotaReached(self._daily_quota, midnight + 86400 - now, where, left=left, asked=count)
        if policy.user_daily_quota:
            made = await self._generations.images_since(who.platform, who.workspace, midnight, who.user_id)
            if made + count > policy.user_daily_quota:
                left = max(0, policy.user_daily_quota - made)
                wait = midnight + 86400 - now
                raise QuotaReached(policy.user_daily_quota, wait, where, personal=True, left=left, asked=count)

    async def audit(self, who: Requester, action: str, generation_id: int | None = None, detail: str = "") -> None:
        """Record what someone did in a server, for its admins."""
        if who.workspace is not None:
            await self._policies.audit(
                AuditEntry(who.platform, who.workspace, who.user_id, action, generation_id, detail)
            )

    async def audit_log(self, who: Requester, *, may_manage: bool, limit: int = 15) -> list[AuditEntry]:
        """Return the server's newest audit entries, for its managers only."""
        if who.workspace is None:
            raise InvalidOption("audit", "only exists in a server, not in direct messages")
        if not may_manage:
            raise NotAllowed("read", only=managers(who), what=f"the {server_word(who)}'s audit log")
        return await self._policies.recent_audit(who.platform, who.workspace, limit)
