"""``ttlx sweep --launcher slurm --nodes N --gpus G``: the job's shape, and SLURM's variables turned into the
process layout by real processes on 127.0.0.1 (what srun gives each task of a 2-node job)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from harness import Cluster

from ttlx.errors import ConfigError
from ttlx.sweeps import launchers


def test_a_run_on_several_nodes_is_one_job_of_one_task_per_node_with_its_gpus():
    options = launchers.SlurmOptions(partition="gpu", gpus_per_node=4, nodes=3, timeout_min=60)
    params = launchers.slurm_parameters(options)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (3, 1, 4)
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 60
    with pytest.raises(ConfigError, match=r"--nodes 2 runs each run on several SLURM nodes and needs --launcher "
                                          r"slurm; on one machine, start `ttlx train --multihost` processes"):
        launchers.check_nodes("submitit-local", launchers.SlurmOptions(nodes=2))
    with pytest.raises(ConfigError, match="--nodes"):
        launchers.SlurmOptions(nodes=0)


def job_id_with_a_free_port() -> int:
    """A SLURM job id whose coordinator port (JAX: 61440 + id % 4096) nobody listens on."""
    for job_id in range(4242, 4242 + 4096, 97):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", 61440 + job_id % 4096))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free port in JAX's SLURM range")


@pytest.mark.slow
def test_slurm_variables_give_each_task_its_place_in_one_run(digits_dir, tmp_path):
    from tiny_model import tiny_train_config

    cfg = tiny_train_config(tmp_path / "run", dataset="digits", data_dir=str(digits_dir), batch_size=32, sub=25,
                            max_epoch=1)
    job = str(job_id_with_a_free_port())

    def slurm_env(i: int) -> dict:  # srun's variables for task i of a job of 2 nodes, 1 task each
        return {"SLURM_JOB_ID": job, "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "2",
                "SLURM_PROCID": str(i), "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "2", "SLURM_NODEID": str(i)}

    with Cluster(2, tmp_path / "logs", multihost=False, script=Path(__file__).with_name("slurm_task.py")) as cluster:
        cluster.start(lambda i: [json.dumps(cfg.to_dict())], slurm_env)
        results = cluster.wait(240)
    for r in results:
        assert r.returncode == 0, r.log[-3000:]
        assert r.last_line == f"layout {r.index} 2 2 done"  # SLURM_PROCID -> process index; 2 devices in all
    assert (tmp_path / "run" / "status.json").is_file() and (tmp_path / "run" / "eval_test.json").is_file()
