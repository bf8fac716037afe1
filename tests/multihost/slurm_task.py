"""One task of a multi-node SLURM job, as submitit runs it: ``python slurm_task.py CONFIG_JSON``.

Registers the tiny network, runs ``ttlx.sweeps.launchers.run_one_on_nodes`` (which reads SLURM's variables
from the environment), then prints ``layout <process index> <process count> <devices>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: tiny_model

from tiny_model import TINYNET  # noqa: E402

from ttlx import registry  # noqa: E402

if __name__ == "__main__":
    import jax

    from ttlx.sweeps.launchers import run_one_on_nodes

    registry.models.register("tinynet", TINYNET, package="tests")
    result = run_one_on_nodes(json.loads(sys.argv[1]), 0)
    print("layout", jax.process_index(), jax.process_count(), len(jax.devices()), result["status"], flush=True)
