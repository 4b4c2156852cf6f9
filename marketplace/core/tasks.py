"""The one Celery application. Each domain keeps its tasks in its own ``tasks.py``.

Embedded default (no ``MARKET_REDIS_URL``): tasks run in-process (eagerly) and periodic jobs are
driven by a small loop inside the web process. With Redis: tasks go to Redis and ``marketplace
worker`` runs a worker with an embedded beat scheduler.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import Celery
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.db import Database
from marketplace.core.settings import Settings, load_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Core modules holding tasks; the composition root (app, cli) adds every domain's ``tasks`` module.
TASK_MODULES = ["marketplace.core.identity.tasks"]

celery_app = Celery("marketplace")


@dataclass(frozen=True)
class PeriodicJob:
    """A task run every ``seconds`` by beat (or by the in-process loop)."""

    task_name: str
    seconds: float


PERIODIC_JOBS: list[PeriodicJob] = []
_state: dict[str, Settings] = {}


def periodic(seconds: float) -> Callable[[T], T]:
    """Mark a Celery task (apply under ``@celery_app.task``) to run every ``seconds``."""

    def mark(task: T) -> T:
        PERIODIC_JOBS.append(PeriodicJob(task_name=task.name, seconds=seconds))  # type: ignore[attr-defined]
        return task

    return mark


def configure_celery(settings: Settings, task_modules: list[str] | None = None) -> Celery:
    """Point the Celery app at Redis, or make it run tasks in-process; import (register) the task modules."""
    _state["settings"] = settings
    for module in [*TASK_MODULES, *(task_modules or [])]:
        importlib.import_module(module)
    if settings.redis_url:
        celery_app.conf.update(
            broker_url=settings.redis_url,
            result_backend=settings.redis_url,
            task_always_eager=False,
            broker_connection_retry_on_startup=True,
            task_acks_late=True,
            worker_prefetch_multiplier=1,
            task_serializer="json",
            accept_content=["json"],
            timezone="UTC",
        )
    else:
        celery_app.conf.update(
            broker_url="memory://", result_backend="cache+memory://", task_always_eager=True, task_eager_propagates=True
        )
    celery_app.conf.beat_schedule = {job.task_name: {"task": job.task_name, "schedule": job.seconds} for job in PERIODIC_JOBS}
    _forget_connections()
    return celery_app


def _forget_connections() -> None:
    # Celery keeps the result store it made first (per thread) and its broker connection pool, whatever the
    # configuration says later: one process may be configured in-process first and for Redis after (tests do).
    celery_app._pool = None  # kombu keeps its pools per broker URL: the next use takes the right one
    celery_app._backend_cache = None
    celery_app._local = threading.local()


def task_settings() -> Settings:
    """The settings tasks run with: the configuring process's, or read from the environment in a worker."""
    if "settings" not in _state:
        configure_celery(load_settings())
    return _state["settings"]


def run_in_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run an async service call in a fresh session from a (synchronous) task."""

    async def main() -> T:
        database = Database(task_settings().resolved_database_url, pool_size=2)
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # Called from inside an event loop (an eager task run by a request): use a loop of its own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="task") as pool:
        return pool.submit(asyncio.run, main()).result()


_in_process_queue = ThreadPoolExecutor(max_workers=2, thread_name_prefix="in-process-task")


def enqueue(task: Any, *args: Any, **kwargs: Any) -> Future[Any] | Any:
    """Queue a task; call it only after the transaction that calls for it has committed.

    With Redis the task goes to the workers. In the embedded default it runs on a small
    in-process pool, so the request that queued it does not wait for it.
    """
    if celery_app.conf.task_always_eager:
        return _in_process_queue.submit(task.apply, args=args, kwargs=kwargs)
    return task.apply_async(args=args, kwargs=kwargs)


class InProcessScheduler:
    """Runs periodic jobs inside the web process when there is no Redis and no beat."""

    def __init__(self, jobs: list[PeriodicJob]) -> None:
        self.jobs = jobs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {}

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread = threading.Thread(target=self._loop, name="periodic-jobs", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import time

        due = {job.task_name: time.monotonic() + min(job.seconds, 5.0) for job in self.jobs}
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for job in self.jobs:
                if now >= due[job.task_name]:
                    due[job.task_name] = now + job.seconds
                    try:
                        celery_app.tasks[job.task_name].apply()
                        self.runs[job.task_name] = self.runs.get(job.task_name, 0) + 1
                    except Exception:
                        log.exception("periodic job %s failed", job.task_name)

    def stop(self) -> None:
        """Stop the scheduler and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def worker_state(settings: Settings, timeout: float = 1.0) -> dict[str, Any]:
    """How tasks are being run: in-process, or by how many Celery workers answer a ping."""
    if not settings.redis_url:
        return {"mode": "in-process", "ok": True, "workers": 0}
    try:
        replies = celery_app.control.inspect(timeout=timeout).ping() or {}
    except Exception as exc:
        return {"mode": "celery", "ok": False, "workers": 0, "error": exc.__class__.__name__}
    return {"mode": "celery", "ok": bool(replies), "workers": len(replies)}
