"""What the hosted-API backends share: their httpx client, retries with backoff and jitter, downloads.

Retries follow the APIs' own advice (Runware's rate-limit page: retry 429,
503 and 504 with exponential backoff): full jitter, so that many bots that
failed together do not retry together, never sooner than a ``Retry-After``
header asks, and within a time budget per job.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import SecretStr

from bot import metrics
from bot.actions import ButtonAction
from bot.catalog import Catalog, CatalogEntry
from bot.describe import Description
from bot.errors import BackendUnavailable, JobCancelled
from bot.request import GenerationRequest
from inference.capabilities import CAPABILITIES, BackendName

__all__ = [
    "TRANSIENT_STATUS",
    "HostedBackend",
    "ImageLost",
    "Retrying",
    "decode_inline",
    "download",
    "number_or_none",
    "object_or_none",
    "retry_after",
    "sleep_or_cancel",
]

# Statuses that say "not now" rather than "no": timeouts, rate limits, overloaded or restarting servers.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class Http:
    """A backend's one httpx client (pooled keep-alive connections), entered by at most as many POSTs.

    Submits wait for a connection in front of httpx rather than in httpcore's pool,
    whose bookkeeping costs O(waiting × connections) per request: with 200 jobs on
    16 connections that was a third of the client's CPU (bench/remote_overhead.py).
    Downloads skip that line: a finished image should not wait behind new jobs.

    httpx's timeout bounds each read, not a whole answer: a server that sends a few
    bytes at a time would hold a request open for as long as it liked. So each
    request is also bounded as a whole, and one past it raises `httpx.ReadTimeout`,
    as a silent server does.

    Args:
        timeout: seconds one request may take, from sending to the last byte of the answer.
        max_connections: connections (and requests in flight) at most.
        client: an httpx client to use instead (its own limits apply too).
    """

    def __init__(self, *, timeout: float, max_connections: int, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "imagebot"},
        )
        self._gate = asyncio.Semaphore(max_connections)
        self._timeout = timeout

    async def post(self, url: str, **options: Any) -> httpx.Response:
        """POST when a connection is free."""
        async with self._gate:
            return await self._whole(self._client.post(url, **options))

    async def get(self, url: str, **options: Any) -> httpx.Response:
        """GET (a download of a finished image) ahead of the POSTs waiting for a connection."""
        return await self._whole(self._client.get(url, **options))

    async def _whole(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        try:
            async with asyncio.timeout(self._timeout):  # no task per request, unlike wait_for
                return await request
        except TimeoutError:
            raise httpx.ReadTimeout(f"the whole answer took longer than {self._timeout:g} s") from None

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()


async def sleep_or_cancel(seconds: float, cancel: asyncio.Event | None) -> None:
    """Sleep, but raise `JobCancelled` as soon as the job is cancelled."""
    if cancel is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(cancel.wait(), seconds)
    except TimeoutError:
        return
    raise JobCancelled()


def retry_after(response: httpx.Response) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def number_or_none(answer: Any, key: str) -> float | None:
    """Return ``answer[key]`` as a number (an API sends numbers or numeric strings), None when it has none."""
    value = answer.get(key) if isinstance(answer, dict) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def object_or_none(response: httpx.Response) -> dict[str, Any] | None:
    """Return the body's JSON object, or None for anything else (a proxy's error page, a cut answer, a bare list).

    Both APIs answer with an object, errors included: JSON of another shape is as unreadable as no JSON.
    """
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@dataclass
class Retrying:
    """The retries of one job: exponential backoff with full jitter, within a time budget.

    Args:
        budget: seconds from the first try after which no retry starts.
        backend: whose retries these are, for the retry counter.
        base, cap: the backoff before retry n is uniform in [0, min(cap, base × 2ⁿ)].
    """

    budget: float
    backend: str = "remote"
    base: float = 0.5
    cap: float = 10.0
    tries: int = 1
    last: str = ""
    _deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.budget

    async def again(self, why: str, cancel: asyncio.Event | None, wait_at_least: float | None = None) -> bool:
        """Wait before the next try and return True, or return False when the budget allows none."""
        self.last = why
        delay = random.uniform(0.0, min(self.cap, self.base * 2 ** (self.tries - 1)))
        if wait_at_least is not None:
            delay = max(delay, wait_at_least)
        if time.monotonic() + delay > self._deadline:
            return False
        await sleep_or_cancel(delay, cancel)
        self.tries += 1
        metrics.REMOTE_RETRIES.labels(self.backend).inc()
        return True

    def exhausted(self, title: str) -> BackendUnavailable:
        """Return the error to raise when retrying gave up."""
        return BackendUnavailable(
            title, f"it was unavailable for {self.tries} tries over {self.budget:g} s (last: {self.last})"
        )


class ImageLost(Exception):
    """An image URL could not be downloaded (expired, 404) within the retry budget."""


async def download(http: Http, url: str, retrying: Retrying, cancel: asyncio.Event | None) -> bytes:
    """Return an image's bytes; transient failures are retried, anything else raises `ImageLost`."""
    while True:
        try:
            response = await http.get(url)
        except httpx.TransportError as error:
            why = type(error).__name__
        else:
            if response.status_code == 200:
                return response.content
            if response.status_code not in TRANSIENT_STATUS:
                raise ImageLost(f"HTTP {response.status_code}")
            why = f"HTTP {response.status_code}"
        if not await retrying.again(why, cancel):
            raise ImageLost(why)


def decode_inline(text: str) -> bytes:
    """Return the bytes of base64 image data, with or without a ``data:`` URI prefix."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    return base64.b64decode(text, validate=True)


class HostedSettings(Protocol):
    """What every hosted API's settings have (`RunwareSettings`, `ModelsLabSettings`)."""

    api_key: SecretStr | None
    timeout: float
    max_connections: int


class HostedBackend:
    """What both hosted APIs' backends share: the key, the catalog, the capability table, the client.

    Args:
        catalog: maps the request's names to the API's ids.
        settings: the backend's settings; the key, timeout and connection limit are read here.
        client: an httpx client to use instead of the backend's own.
    """

    name: ClassVar[BackendName]

    def __init__(self, catalog: Catalog, settings: HostedSettings, client: httpx.AsyncClient | None = None) -> None:
        if settings.api_key is None:
            raise ValueError(f"IMAGEBOT_{self.name.upper()}_API_KEY is not set")
        self._catalog = catalog
        self._key = settings.api_key.get_secret_value()
        self._http = Http(timeout=settings.timeout, max_connections=settings.max_connections, client=client)

    @property
    def upscales_alone(self) -> bool:
        """Tell whether the API's upscale enlarges the image alone, with no model redrawing it."""
        return not CAPABILITIES[self.name].upscale_redraws

    def check(self, request: GenerationRequest) -> None:
        """Refuse what the API cannot make (before anything is queued), naming the backend that can."""
        CAPABILITIES[self.name].check(request, self._catalog)

    def runs(self, entry: CatalogEntry) -> bool:
        """Tell whether the entry has an id on this API (the catalog's ``runware``/``modelslab`` field)."""
        return CAPABILITIES[self.name].identifier(entry) is not None

    def withheld_actions(self, request: GenerationRequest) -> frozenset[ButtonAction]:
        """Return the result buttons whose requests the API cannot make (`Capabilities.withheld_actions`)."""
        return CAPABILITIES[self.name].withheld_actions(request)

    def check_describe(self) -> None:
        """Refuse ``/describe`` where the API has no caption task, naming the backends that have one."""
        CAPABILITIES[self.name].check_describe()

    async def describe(self, image: bytes) -> Description:
        """Return what `image` shows; an API with a caption task (Runware) overrides this, the others refuse.

        Every hosted backend is a `bot.ports.DescribingBackend`, so the service asks each the same way
        and one without a caption task answers with the capability table's sentence.

        Raises:
            bot.errors.InvalidOption: the API has no caption task (`check_describe`).
        """
        self.check_describe()
        # The table says this API captions, yet its backend does not: a bug here, not something to tell users.
        raise NotImplementedError(f"{type(self).__name__} has the describe capability but no describe()")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
