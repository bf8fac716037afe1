"""A submitit job for the sweep tests: registers tinynet and the fake data, then runs one sweep run.

submitit's local executor runs jobs in a fresh process, where the test fixtures do not exist.
"""

from __future__ import annotations


def tiny_job(config: dict, bootstrap: int) -> dict:
    from fake_data import FakeData
    from tiny_model import TINYNET

    import ttlx.data
    from ttlx import registry
    from ttlx.sweeps.grid import run_one

    registry.models.register("tinynet", TINYNET, package="tests")
    ttlx.data.data_source = FakeData
    return run_one(config, bootstrap)
