"""The plugin registry: models and datasets found through Python entry points.

Built-in models and datasets are registered through ttlx's own entry points (``ttlx.models`` and
``ttlx.datasets`` in ``pyproject.toml``), the same road a third-party package takes. An entry point
names an object (an architecture or a dataset spec); its entry-point name is the canonical name, and
the object's optional ``aliases`` attribute adds the spellings users type (``HAM``, ``HAM10000``).
Lookups are case-insensitive.

A plugin that fails to import, or whose object lacks what its kind needs (a model's ``build``, a
dataset's ``scan``), gives one warning naming its package and is left out; the rest still load.
``TTLX_PLUGINS=pkg_a,pkg_b`` restricts third-party plugins to those distributions (ttlx's own always
load). Tests register fakes with :meth:`Registry.register` instead of depending on what is installed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ttlx import settings

BUILTIN_PACKAGE = "ttlx"


class UnknownNameError(KeyError):
    """A name that no registered plugin provides; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plain.
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered object and the distribution that provides it."""

    name: str
    obj: Any
    package: str


class Registry:
    """Objects of one entry-point group, loaded on first use."""

    def __init__(self, group: str, kind: str, needs: tuple[str | tuple[str, ...], ...] = ()):
        self.group = group
        self.kind = kind
        self.needs = needs  # methods an object of this kind must have (a tuple: one of them)
        self._entries: dict[str, Entry] | None = None
        self._extra: dict[str, Entry] = {}
        self.failures: list[tuple[str, str, str]] = []  # (package, entry-point name, error)

    def register(self, name: str, obj: Any, package: str = "<runtime>") -> None:
        """Register ``obj`` under ``name`` without an entry point (tests and notebooks)."""
        self._extra[name] = Entry(name, obj, package)

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)

    def _load(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = {}
            for ep in _entry_points(self.group):
                package = ep.dist.name if ep.dist is not None else "<unknown>"
                if not _allowed(package):
                    continue
                try:
                    obj = ep.load()
                    for need in self.needs:  # a need is a method name, or a tuple of alternatives
                        names = need if isinstance(need, tuple) else (need,)
                        if not any(callable(getattr(obj, n, None)) for n in names):
                            raise TypeError(f"{type(obj).__name__} object is no {self.kind}: it has no "
                                            f"{'() or '.join(names)}() method")
                except Exception as err:  # a broken plugin must not take the others down
                    self.failures.append((package, ep.name, f"{type(err).__name__}: {err}"))
                    warnings.warn(
                        f"ttlx: the plugin package '{package}' failed to load its {self.kind} "
                        f"'{ep.name}' ({type(err).__name__}: {err}); the other plugins still work.",
                        stacklevel=2,
                    )
                    continue
                self._entries[ep.name] = Entry(ep.name, obj, package)
        return {**self._entries, **self._extra}

    def entries(self) -> list[Entry]:
        return sorted(self._load().values(), key=lambda e: e.name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def resolve(self, name: str) -> str:
        """The canonical name for ``name`` or one of its aliases, case-insensitively."""
        wanted = name.lower()
        for entry in self.entries():
            spellings = [entry.name, *getattr(entry.obj, "aliases", ())]
            if wanted in (s.lower() for s in spellings):
                return entry.name
        valid = ", ".join(self.names()) or "(none registered)"
        raise UnknownNameError(f"Unknown {self.kind} '{name}'; choose one of: {valid}.")

    def get(self, name: str) -> Any:
        return self._load()[self.resolve(name)].obj


def _entry_points(group: str) -> list[EntryPoint]:
    return list(entry_points(group=group))


def _allowed(package: str) -> bool:
    only = settings.plugin_packages()
    return only is None or package == BUILTIN_PACKAGE or package in only


# a model is an Architecture (build) or an old name that translates to one (translate)
models = Registry("ttlx.models", "model", needs=(("build", "translate"),))
datasets = Registry("ttlx.datasets", "dataset", needs=("scan",))


def plugin_rows() -> list[dict[str, Any]]:
    """The table behind ``ttlx plugins``: one row per registered dataset and model (kind, name, aliases,
    package, status), then the plugins that failed to load, with their error."""
    groups = (datasets, models)
    rows = [{"kind": reg.kind, "name": entry.name, "aliases": ", ".join(getattr(entry.obj, "aliases", ())),
             "package": entry.package, "status": "ok"}
            for reg in groups for entry in reg.entries()]
    rows += [{"kind": reg.kind, "name": name, "aliases": "", "package": package,
              "status": f"failed to load: {error}"}
             for reg in groups for package, name, error in reg.failures]
    return rows
