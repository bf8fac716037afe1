"""The ``ttlx`` command: parse options, build a config, call the library.

One module per command group (``catalog``, ``data``, ``training``, ``weights``, ``analyze``, ``sweep``);
importing one registers its commands on ``base.app``. Nothing heavy is imported at module level (no JAX,
no plugins) so ``ttlx --help`` stays instant: each command imports what it needs inside its body.
"""

from __future__ import annotations

import importlib

from ttlx.cli.base import app

__all__ = ["app", "main"]

# importing a group's module registers its commands; this order is the order of `ttlx --help`
for _group in ("catalog", "data", "training", "weights", "analyze", "sweep"):
    importlib.import_module(f"ttlx.cli.{_group}")


def main() -> None:
    app()
