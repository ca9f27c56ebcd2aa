"""Engines by name. Modules are imported only when an app uses them."""

from __future__ import annotations

import importlib

from realtime_site.runner.engines.base import Engine, EngineOutput, EngineUnavailable

__all__ = ["ENGINES", "Engine", "EngineOutput", "EngineUnavailable", "create_engine"]

ENGINES: dict[str, str] = {
    "echo": "realtime_site.runner.engines.echo:EchoEngine",
    "stylize": "realtime_site.runner.engines.stylize:StylizeEngine",
    "lcm": "realtime_site.runner.engines.diffusion:LcmEngine",
    "turbo": "realtime_site.runner.engines.diffusion:TurboEngine",
}


def create_engine(name: str, options: dict[str, str]) -> Engine:
    """Instantiate engine ``name``; EngineUnavailable names why it cannot be."""
    target = ENGINES.get(name)
    if target is None:
        raise EngineUnavailable(f"engine {name!r} is not part of this build (known: {', '.join(sorted(ENGINES))})")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(f"engine {name!r} cannot be imported: {exc}") from None
    try:
        return getattr(module, class_name)(options)
    except ValueError as exc:
        raise EngineUnavailable(f"engine {name!r}: {exc}") from None
