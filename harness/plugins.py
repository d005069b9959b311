"""Task discovery through the ``harness.tasks`` entry-point group.

Built-in tasks are registered in pyproject.toml exactly as a third-party package
would register its own. A broken plugin (import error, invalid task.yaml) is
reported by name with its reason and does not hide the others.

``HARNESS_EXTRA_TASKS`` (``name=module:attr`` entries separated by ``;``) adds tasks
without installing a package; tests use it to load throwaway plugins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points

from harness.api import Task
from harness.config import ConfigError

GROUP = "harness.tasks"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded."""

    name: str
    """Entry-point name."""
    target: str
    """``module:attr`` it points to."""
    reason: str
    """One line saying what went wrong and how to fix it."""


#: The installed packages' task entry points as a warm worker server read them once before forking
#: (:func:`warm`; its key covers the installed packages, so they cannot change under it); None:
#: read on every call (~40 ms: importlib.metadata scans every installed distribution).
_WARM_ENTRY_POINTS: dict[str, str] | None = None


def _installed_specs() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def warm() -> None:
    """Read the installed entry points once, for the processes forked from this one."""
    global _WARM_ENTRY_POINTS
    _WARM_ENTRY_POINTS = _installed_specs()


def _entry_specs() -> dict[str, str]:
    specs = dict(_WARM_ENTRY_POINTS) if _WARM_ENTRY_POINTS is not None else _installed_specs()
    extra = os.environ.get("HARNESS_EXTRA_TASKS", "")
    for item in filter(None, (x.strip() for x in extra.split(";"))):
        if "=" not in item:
            raise ConfigError(f"HARNESS_EXTRA_TASKS entry {item!r}: write name=module:attr")
        name, target = item.split("=", 1)
        specs[name.strip()] = target.strip()
    return specs


def _load_one(name: str, target: str) -> Task:
    module_name, _, attr = target.partition(":")
    obj = import_module(module_name)
    for part in (attr or "task").split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, Task):
        obj = obj()
    if not isinstance(obj, Task):
        raise TypeError(f"{target} is a {type(obj).__name__}, not a harness.api.Task")
    cfg = obj.config  # validates task.yaml now, so errors surface at discovery
    if cfg.name != name:
        raise ConfigError(f"entry point {name!r} loads a task named {cfg.name!r}: make them equal")
    return obj


@lru_cache(maxsize=None)
def _load_named(name: str, target: str) -> Task:
    return _load_one(name, target)


@lru_cache(maxsize=1)
def _discover_cached(key: str) -> tuple[dict[str, Task], tuple[BrokenPlugin, ...]]:
    tasks: dict[str, Task] = {}
    broken: list[BrokenPlugin] = []
    for name, target in sorted(_entry_specs().items()):
        try:
            tasks[name] = _load_named(name, target)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hides others
            reason = str(e).strip().splitlines()
            first = f"{type(e).__name__}: " + (" ".join(reason) if reason else "")
            broken.append(BrokenPlugin(name, target, first))
    return tasks, tuple(broken)


def clear_cache() -> None:
    """Forget every loaded task (a test that changes a plugin's code re-imports it afterwards)."""
    _discover_cached.cache_clear()
    _load_named.cache_clear()


def discover() -> tuple[dict[str, Task], tuple[BrokenPlugin, ...]]:
    """All loadable tasks and the broken ones, each with a reason."""
    return _discover_cached(os.environ.get("HARNESS_EXTRA_TASKS", ""))


def get_task(name: str) -> Task:
    """The task ``name``. Only its own plugin is imported when discovery has not run yet: a run
    process needs one task, and importing every task (their models, their task.yaml) cost each
    run ~1 s of CPU. Any failure falls through to full discovery, which names the problem."""
    if not _discover_cached.cache_info().currsize:
        target = _entry_specs().get(name)
        if target is not None:
            try:
                return _load_named(name, target)
            except Exception:  # noqa: BLE001, S110 - discovery below reports it with its reason
                pass
    tasks, broken = discover()
    if name in tasks:
        return tasks[name]
    for b in broken:
        if b.name == name:
            raise ConfigError(f"task {name!r} is installed but broken: {b.reason}")
    raise ConfigError(
        f"unknown task {name!r} (installed: {', '.join(sorted(tasks)) or 'none'}). "
        "Register it under the 'harness.tasks' entry-point group and reinstall (pip install -e .)"
    )
