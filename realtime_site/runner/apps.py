"""An app as the runner serves it: its engine, its state, its scheduler and worker threads."""

from __future__ import annotations

import concurrent.futures
import enum
import functools
import logging
import time
from typing import Any

from realtime_site.runner.config import AppSpec
from realtime_site.runner.engines import Engine, EngineUnavailable, create_engine
from realtime_site.runner.execution import execute_batch
from realtime_site.runner.scheduler import FairScheduler

__all__ = ["AppState", "RunnerApp", "load_apps"]

log = logging.getLogger("realtime_site.runner")


class AppState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    UNAVAILABLE = "unavailable"


class RunnerApp:
    def __init__(self, spec: AppSpec):
        self.spec = spec
        self.state = AppState.LOADING
        self.reason: str | None = None
        self.engine: Engine | None = None
        self.scheduler: FairScheduler | None = None
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.load_seconds: float | None = None

    @property
    def app_id(self) -> str:
        return self.spec.app_id

    def load(self) -> None:
        """Create, load and warm up the engine (blocking). Failure makes the app unavailable."""
        started = time.perf_counter()
        try:
            engine = create_engine(self.spec.engine, self.spec.options)
            engine.load()
            engine.warm_up()
        except EngineUnavailable as exc:
            self._unavailable(str(exc))
            return
        except Exception as exc:  # a broken engine must not take the runner down
            log.exception("app %s: engine %s failed to load", self.app_id, self.spec.engine)
            self._unavailable(f"engine {self.spec.engine!r} failed to load: {type(exc).__name__}: {exc}")
            return
        self.engine = engine
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=engine.workers, thread_name_prefix=f"engine-{self.spec.engine}"
        )
        if engine.max_batch > 1:
            self.scheduler = FairScheduler(
                engine.workers,
                max_batch=engine.max_batch,
                # An input whose previews are asked for runs alone (its key equals no other).
                batch_key=lambda job: object() if job.previews else engine.batch_key(job.request),
                run_batch=functools.partial(execute_batch, self),
            )
        else:
            self.scheduler = FairScheduler(engine.workers)
        self.load_seconds = time.perf_counter() - started
        self.state = AppState.READY
        log.info("app %s ready (engine %s, %.2f s)", self.app_id, self.spec.engine, self.load_seconds)

    def _unavailable(self, reason: str) -> None:
        self.state = AppState.UNAVAILABLE
        self.reason = reason
        log.warning("app %s unavailable: %s", self.app_id, reason)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.app_id,
            "engine": self.spec.engine,
            "state": self.state.value,
            "reason": self.reason,
            "paths": list(self.spec.paths),
        }
        if self.engine is not None:
            info["previews"] = self.engine.previews
            info["details"] = self.engine.describe()
        if self.scheduler is not None:
            info["load"] = self.scheduler.stats()
        return info

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)


def load_apps(specs: list[AppSpec]) -> list[RunnerApp]:
    """Load every app's engine in parallel threads; returns once all are ready or unavailable."""
    apps = [RunnerApp(spec) for spec in specs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(apps)) as pool:
        list(pool.map(RunnerApp.load, apps))
    return apps
