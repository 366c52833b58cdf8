"""The job queue: round-robin between users, first-in first-out within one user.

One user's twenty jobs do not starve everyone else: the next job always comes
from the user who has waited longest for a turn. The queue runs a fixed number
of jobs at once (one per GPU worker) and knows nothing of how a job runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from bot.errors import QueueFull, RateLimited
from bot.jobs import Job

__all__ = ["JobQueue"]

log = logging.getLogger(__name__)


class JobQueue:
    """Fair queue that hands jobs to `run`, `concurrency` at a time.

    Args:
        run: called once per job; it owns the job's events and never raises.
        concurrency: jobs running at once.
        max_queue: jobs waiting at once, all users together.
        max_per_user: jobs one user may have waiting or running.
        seconds_per_job: a first guess of one job's time, for "try again in N min", until jobs are timed.
    """

    def __init__(
        self,
        run: Callable[[Job], Awaitable[None]],
        *,
        concurrency: int = 1,
        max_queue: int = 100,
        max_per_user: int = 4,
        seconds_per_job: float = 30.0,
    ) -> None:
        self._run = run
        self._concurrency = concurrency
        self._max_queue = max_queue
        self._max_per_user = max_per_user
        self._seconds_per_job = seconds_per_job
        self._timed = False
        self._waiting: dict[tuple[str, str], deque[Job]] = {}
        self._turns: deque[tuple[str, str]] = deque()
        self._running: set[Job] = set()
        self._available = asyncio.Condition()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the workers that run jobs (idempotent)."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"imagebot-queue-{n}") for n in range(self._concurrency)
            ]

    async def aclose(self) -> None:
        """Stop the workers; running jobs are cancelled with them."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

    @property
    def waiting(self) -> int:
        """Return how many jobs are waiting."""
        return sum(len(jobs) for jobs in self._waiting.values())

    @property
    def running(self) -> int:
        """Return how many jobs are running."""
        return len(self._running)

    def eta(self, job: Job) -> float | None:
        """Return the seconds until a waiting job should start, from recent job times; None before any."""
        position = self.position(job)
        if not self._timed or not position:
            return None
        # The running job is on average half done.
        return (position - 0.5) * self._seconds_per_job / self._concurrency

    def check_room(self, user: tuple[str, str], count: int = 1) -> None:
        """Raise `QueueFull` or `RateLimited` if `count` more jobs of this user would not all be accepted."""
        if self.waiting + count > self._max_queue:
            raise QueueFull(retry_after=self.waiting * self._seconds_per_job / self._concurrency)
        mine = len(self._waiting.get(user, ())) + sum(job.requester.key == user for job in self._running)
        if mine >= self._max_per_user:
            raise RateLimited(self._max_per_user)
        if mine + count > self._max_per_user:
            raise RateLimited(self._max_per_user, asked=count, waiting=mine)

    async def submit(self, job: Job) -> int:
        """Queue a job and return its position (1 = next); raises like `check_room`."""
        self.check_room(job.requester.key)
        return await self.resume(job)

    async def resume(self, job: Job) -> int:
        """Queue a job that was accepted before a restart, whatever the limits; return its position."""
        user = job.requester.key
        if user not in self._waiting:
            self._waiting[user] = deque()
            self._turns.append(user)
        self._waiting[user].append(job)
        job.position_of = self.position
        job.eta_of = self.eta
        async with self._available:
            self._available.notify()
        return self.position(job) or 0

    def take(self, fits: Callable[[Job], bool], limit: int) -> list[Job]:
        """Take up to `limit` waiting jobs that fit (in turn order) to run now beside the current one.

        They count as running until `release`.
        """
        taken: list[Job] = []
        for user in list(self._turns):
            for job in list(self._waiting.get(user, ())):
                if len(taken) < limit and fits(job):
                    self.remove(job)
                    self._running.add(job)
                    taken.append(job)
        return taken

    def release(self, jobs: Iterable[Job]) -> None:
        """Forget jobs taken with `take` once they have run."""
        for job in jobs:
            self._running.discard(job)

    def remove(self, job: Job) -> bool:
        """Take a waiting job out of the queue; False if it is not waiting."""
        jobs = self._waiting.get(job.requester.key)
        if jobs is None or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._waiting[job.requester.key]
            self._turns.remove(job.requester.key)
        return True

    def position(self, job: Job) -> int | None:
        """Return 0 if running, the 1-based place in the round-robin order if waiting, else None."""
        if job in self._running:
            return 0
        user = job.requester.key
        if user not in self._waiting or job not in self._waiting[user]:
            return None
        depth = self._waiting[user].index(job)
        # Every user ahead in the turn order gets one job per round before ours.
        ahead = 0
        for index, other in enumerate(self._turns):
            if other == user:
                ahead += depth
                continue
            rounds = depth + 1 if index < self._turns.index(user) else depth
            ahead += min(len(self._waiting[other]), rounds)
        return ahead + 1

    def _next(self) -> Job | None:
        if not self._turns:
            return None
        user = self._turns.popleft()
        jobs = self._waiting[user]
        job = jobs.popleft()
        if jobs:
            self._turns.append(user)
        else:
            del self._waiting[user]
        return job

    async def _work(self) -> None:
        while True:
            async with self._available:
                await self._available.wait_for(lambda: bool(self._turns))
                job = self._next()
            assert job is not None
            self._running.add(job)
            started = asyncio.get_running_loop().time()
            try:
                await self._run(job)
            except Exception:
                log.exception("job %s escaped its runner", job.id)
            finally:
                self._running.discard(job)
            self._time(asyncio.get_running_loop().time() - started)

    def _time(self, seconds: float) -> None:
        """Fold one job's time into the running estimate (recent jobs weigh most)."""
        self._seconds_per_job = seconds if not self._timed else 0.7 * self._seconds_per_job + 0.3 * seconds
        self._timed = True
