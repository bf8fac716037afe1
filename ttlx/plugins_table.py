"""The table behind ``ttlx plugins``: every registered dataset and model, and the package providing it.

Plugins that failed to load appear too, with their error, next to the one warning the registry gives.
"""

from __future__ import annotations

from typing import Any


def plugin_rows() -> list[dict[str, Any]]:
    """One row per registered dataset and model (kind, name, aliases, package, status), failures last."""
    from ttlx import registry

    groups = (registry.datasets, registry.models)
    rows = [{"kind": reg.kind, "name": entry.name, "aliases": ", ".join(getattr(entry.obj, "aliases", ())),
             "package": entry.package, "status": "ok"}
            for reg in groups for entry in reg.entries()]
    rows += [{"kind": reg.kind, "name": name, "aliases": "", "package": package,
              "status": f"failed to load: {error}"}
             for reg in groups for package, name, error in reg.failures]
    return rows
