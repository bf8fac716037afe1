"""The benchmark entry point and its JSON contract, checked with made-up measurements (nothing is timed); the
probes still waiting for a GPU loan (benchmarks/probes/) and the GPU-machine helpers (tools/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
PROBES = BENCHMARKS / "probes"
TOOLS = ROOT / "tools"
sys.path[:0] = [str(BENCHMARKS), str(PROBES), str(TOOLS)]

import protocol  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402

SETTINGS = {"batch_size": 16, "image_size": 224, "pipeline_batch_size": 32, "memory_batch_size": 64}


def side(**values) -> dict:
    return {"side": "fake", **values}


def fake_measurements() -> dict:
    return {
        "train_step": {
            "resnet50-ttl1": {"ttlx": side(img_s=9.0), "reference": side(img_s=6.0)},
            "resnet50-ftl": {"ttlx": side(img_s=5.5), "reference": side(img_s=5.0)},
        },
        "pipeline": {"ttlx": side(img_s=900.0), "reference": side(img_s=300.0),
                     "as_shipped": {"ttlx": side(img_s=1500.0, prepare_s=2.0,
                                                 stored={"count": 4, "sizes": {"341x256": 4},
                                                         "identical_to_original": 0, "mean_kib": 40.0}),
                                    "reference": side(img_s=500.0)}},
        "latency": {"resnet50-ftl": {"ttlx": side(latency_ms=40.0), "reference": side(latency_ms=50.0)}},
        "compile": {"first": side(trace_s=2.0, compile_s=10.0), "second": side(trace_s=2.0, compile_s=1.0)},
        "memory": {"ttlx": side(peak_rss_mib=3000.0, device_peak_mib=None),
                   "reference": side(peak_rss_mib=4500.0, device_peak_mib=None)},
    }


def test_help_lists_the_contract_options():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--quick", "--json", "--reference-python", "--threads"):
        assert option in done.stdout


def test_summary_holds_the_contract_fields_with_their_ratios():
    summary = report.summarize(fake_measurements(), SETTINGS)
    assert summary["train_step"] == {"ttlx_img_s": 5.5, "reference_img_s": 5.0, "ratio": pytest.approx(1.1),
                                     "model": "resnet50-ftl", "batch_size": 16, "image_size": 224,
                                     "ttlx_programs": None}
    assert [row["model"] for row in summary["train_steps"]] == ["resnet50-ttl1", "resnet50-ftl"]
    assert summary["pipeline"]["ratio"] == pytest.approx(3.0)
    assert {"ttlx_img_s", "reference_img_s", "ratio"} <= set(summary["pipeline"])
    shipped = summary["pipeline_as_shipped"]
    assert (shipped["ratio"], shipped["target"], shipped["meets_target"]) == (pytest.approx(3.0), 2.0, True)
    assert shipped["ttlx_stored"]["sizes"] == {"341x256": 4} and shipped["ttlx_prepare_s"] == 2.0
    assert "same JPEG bytes" in summary["pipeline"]["comparison"] and "as shipped" in shipped["comparison"]
    assert summary["latency"][0]["speedup"] == pytest.approx(1.25)  # reference ms over ttlx ms
    assert summary["compile"]["compile_ratio"] == pytest.approx(0.1)
    assert summary["compile"]["trace_and_compile_ratio"] == pytest.approx(0.25)
    assert summary["memory"]["ratio"] == pytest.approx(1.5)  # reference MiB over ttlx MiB
    json.dumps(summary)  # everything in it is JSON


def test_a_failed_side_keeps_its_error_and_gets_no_ratio():
    measured = {"train_step": {"resnet50-ftl": {"ttlx": side(img_s=5.0), "reference": {"error": "no torch"}}}}
    entry = report.summarize(measured, SETTINGS)["train_step"]
    assert entry["reference_img_s"] is None
    assert entry["ratio"] is None
    assert entry["reference_error"] == "no torch"


def test_table_has_one_row_per_measurement():
    rows = report.table_rows(report.summarize(fake_measurements(), SETTINGS))
    assert rows[0] == ("train step resnet50-ttl1 (img/s)", "9.00", "6.00", "1.50")
    assert ("input pipeline, same JPEG bytes (img/s)", "900.0", "300.0", "3.00") in rows
    assert ("input pipeline, ttlx as shipped (<=256 px stored) (img/s)", "1500.0", "500.0", "3.00") in rows
    text = report.format_table(rows)
    assert text.splitlines()[0].split() == ["measurement", "ttlx", "reference", "ratio"]
    assert len(text.splitlines()) == len(rows) + 2


def test_result_line_is_read_back_from_noisy_output():
    line = protocol.RESULT_PREFIX + json.dumps({"img_s": 4.5})
    assert protocol.parse_result(f"warning: something\n{line}\nbye\n") == {"img_s": 4.5}
    with pytest.raises(ValueError, match="no BENCH_RESULT"):
        protocol.parse_result("Traceback ...\n")


def test_plan_follows_quick_and_the_accelerator():
    cpu = run.plan(run.parse_args([]), "cpu")
    assert (cpu["batch_size"], cpu["image_size"], cpu["dtype"]) == (16, 224, "float32")
    assert cpu["models"] == list(protocol.MODELS)
    gpu = run.plan(run.parse_args([]), "gpu")
    assert (gpu["batch_size"], gpu["dtype"]) == (128, "bfloat16")
    quick = run.plan(run.parse_args(["--quick", "--batch-size", "2"]), "cpu")
    assert (quick["batch_size"], quick["image_size"], quick["models"]) == (2, 64, ["resnet50-ftl"])


def test_timing_counts_warmup_apart():
    calls = []
    timing = protocol.time_steps(lambda: calls.append(1), warmup=2, steps=3)
    assert len(calls) == 5
    assert len(timing["step_s"]) == 3
    timing = {"median_s": 2.0, "step_s": [1.0, 2.0, 5.0], "total_s": 8.0}
    assert protocol.images_per_second(8, timing) == 4.0  # from the median step
    assert protocol.images_per_second(8, timing, overall=True) == 3.0  # 24 images in 8 s


def test_alternating_rounds_pool_each_sides_steps(tmp_path, monkeypatch):
    order = []
    step_times = {"ttlx": iter([[1.0, 1.2], [0.8, 1.0]]), "reference": iter([[2.0, 2.0], [4.0, 2.0]])}

    in_flight = iter([[0.5], [0.25]])  # ttlx on an accelerator: ttlx train's loop, one value per process

    def fake_run_side(self, side, measurement, **options):
        order.append(side)
        return {"side": side, "step_s": next(step_times[side]), **({"in_flight_s": next(in_flight)}
                                                                      if side == "ttlx" else {})}

    monkeypatch.setattr(run.Context, "run_side", fake_run_side)
    ctx = run.Context("py", "py", run.plan(run.parse_args([]), "cpu"), tmp_path)
    pooled = ctx.run_alternating("train_step", 2, batch_size=16)
    assert order == ["ttlx", "reference", "ttlx", "reference"]
    assert pooled["ttlx"]["step_s"] == [1.0, 1.2, 0.8, 1.0]
    assert pooled["ttlx"]["img_s"] == pytest.approx(16 / 1.0)  # median of the four steps
    assert pooled["reference"]["img_s"] == pytest.approx(8.0)
    assert pooled["ttlx"]["in_flight_s"] == [0.5, 0.25]
    assert pooled["ttlx"]["in_flight_img_s"] == pytest.approx(16 / 0.375)
    assert "in_flight_img_s" not in pooled["reference"]


def test_no_ratio_between_a_gpu_and_a_cpu_side():
    entry = report.throughput_entry(side(img_s=2500.0, device="NVIDIA H100 80GB HBM3"),
                                    side(img_s=5.0, device="cpu"))
    assert entry["ratio"] is None
    assert entry["device_mismatch"] == ["NVIDIA H100 80GB HBM3", "cpu"]
    assert report.throughput_entry(side(img_s=6.0, device="cpu"), side(img_s=5.0, device="cpu"))["ratio"] == 1.2


def test_no_ratio_when_the_two_sides_built_different_networks():
    entry = report.throughput_entry(side(img_s=6.0, params=23_708_738), side(img_s=5.0, params=23_524_418))
    assert entry["ratio"] is None
    assert entry["params_mismatch"] == [23_708_738, 23_524_418]


def test_pipeline_runs_pool_their_batches_and_a_failed_round_is_left_out():
    rounds = [side(img_s=400.0, step_s=[0.1, 0.1], total_s=0.2, prepare_s=5.0),
              {"error": "killed"},
              side(img_s=200.0, step_s=[0.2, 0.2], total_s=0.4, prepare_s=0.0)]
    pooled = run.pool_pipeline(rounds, batch_size=40)
    assert pooled["img_s"] == pytest.approx(4 * 40 / 0.6)  # all timed batches over all their time
    assert (pooled["rounds"], pooled["img_s_per_round"], pooled["prepare_s"]) == (2, [400.0, 200.0], 5.0)
    assert run.pool_pipeline([{"error": "no torch"}], batch_size=40) == {"error": "no torch"}


def test_a_pipeline_below_its_target_says_so():
    entry = report.pipeline_entry(side(img_s=600.0), side(img_s=500.0), target=2.0, comparison="x")
    assert (entry["ratio"], entry["meets_target"]) == (pytest.approx(1.2), False)
    assert report.pipeline_entry(side(img_s=600.0), {"error": "x"}, target=2.0)["meets_target"] is None


def test_gpu_runs_check_the_gpu_targets():
    measured = {"train_step": {
        "resnet50-ftl": {"ttlx": side(img_s=4600.0, in_flight_img_s=5000.0, device="NVIDIA H200"),
                         "reference": side(img_s=2300.0)},
        "resnet50-ttl2": {"ttlx": side(img_s=5950.0, in_flight_img_s=6000.0, device="NVIDIA H200"),
                          "reference": side(img_s=2700.0)},
    }}
    targets = report.summarize(measured, {**SETTINGS, "backend": "gpu"})["gpu_targets"]
    assert targets["device"] == "NVIDIA H200"
    assert targets["ftl_img_s"] == {"value": 4600.0, "target": 2500.0, "met": True}
    assert targets["ftl_ratio"] == {"value": pytest.approx(2.0), "target": 1.5, "met": True}
    assert targets["ttl2_over_ftl"]["value"] == pytest.approx(5950 / 4600)
    assert targets["ttl2_over_ftl"]["met"] is False  # 1.29 < 1.3
    assert targets["ttl2_over_ftl_in_flight"] == {"value": pytest.approx(1.2), "target": 1.3, "met": False}
    rows = report.table_rows(report.summarize(measured, {**SETTINGS, "backend": "gpu"}))
    assert ("train step resnet50-ttl2, next step in flight as ttlx train runs (img/s)", "6000.00", "-", "-") in rows
    del measured["train_step"]["resnet50-ttl2"]
    assert "ttl2_over_ftl" not in report.summarize(measured, {**SETTINGS, "backend": "gpu"})["gpu_targets"]
    assert "gpu_targets" not in report.summarize(measured, {**SETTINGS, "backend": "cpu"})


def test_latency_rounds_alternate_and_report_the_median_of_their_medians(tmp_path, monkeypatch):
    order = []
    values = {"ttlx": iter([60.0, {"error": "killed"}, 62.0]), "reference": iter([78.0, 121.0, 80.0])}

    def fake_run_side(self, side, measurement, **options):
        order.append(side)
        value = next(values[side])
        return value if isinstance(value, dict) else {"side": side, "latency_ms": value}

    monkeypatch.setattr(run.Context, "run_side", fake_run_side)
    settings = {**run.plan(run.parse_args([]), "cpu"), "rounds": 3, "latency_models": ["densenet201-ftl"]}
    measured = run.measure_latency(run.Context("py", "py", settings, tmp_path))["densenet201-ftl"]
    assert order == ["ttlx", "reference"] * 3
    assert measured["ttlx"]["latency_ms"] == 61.0 and measured["ttlx"]["latency_ms_rounds"] == [60.0, 62.0]
    assert measured["reference"]["latency_ms"] == 80.0
    assert run.pool_latency([{"error": "a"}, {"error": "b"}]) == {"error": "a"}


def test_latency_follows_the_chosen_models():
    assert run.plan(run.parse_args(["--models", "resnet50-ttl2"]), "gpu")["latency_models"] == ["resnet50-ttl2"]
    assert run.plan(run.parse_args([]), "gpu")["latency_models"] == list(run.LATENCY_MODELS)


def test_warm_cache_steps_share_one_filled_cache_per_model_on_the_ttlx_side(tmp_path, monkeypatch):
    calls = []

    def fake_run_side(self, side, measurement, cache=None, **options):
        calls.append((side, cache, options["steps"]))
        return {"side": side, "step_s": [1.0 if side == "ttlx" else 2.0]}

    monkeypatch.setattr(run.Context, "run_side", fake_run_side)
    settings = run.plan(run.parse_args(["--models", "densenet201-ftl", "--steps", "3"]), "cpu")
    measured = run.measure_train_steps_warm(run.Context("py", "py", settings, tmp_path))
    cache = "cache-warm-densenet201-ftl"
    assert calls == [("ttlx", cache, 1), ("ttlx", cache, 3), ("reference", None, 3), ("ttlx", cache, 3),
                     ("reference", None, 3)]
    summary = report.summarize({"train_step_warm": measured}, SETTINGS)
    assert summary["train_steps_warm_cache"][0]["ratio"] == pytest.approx(2.0)
    assert ("train step densenet201-ftl, programs from the cache (img/s)", "16.00", "8.00", "2.00") in \
        report.table_rows(summary)


def test_steps_compiled_in_a_helper_are_labelled_so():
    measured = {"train_step": {"densenet201-ftl": {
        "ttlx": side(img_s=4.5, programs="compiled in a helper process, as ttlx train does"),
        "reference": side(img_s=4.0)}, "resnet50-ftl": {"ttlx": side(img_s=5.5, programs="compiled in this process"),
                                                         "reference": side(img_s=5.0)}}}
    rows = {row[0]: row for row in report.table_rows(report.summarize(measured, SETTINGS))}
    assert rows[f"train step densenet201-ftl{report.HELPER_NOTE} (img/s)"][3] == "1.12"
    assert "train step resnet50-ftl (img/s)" in rows


def test_the_ttlx_side_compiles_in_a_helper_where_ttlx_train_would(tmp_path):
    """With the helper forced on, the timed process loads the helper's train step: the cache then holds one."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update({"TTLX_COMPILATION_CACHE": str(tmp_path / "cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "TTLX_COMPILE_HELPER": "1"})
    done = subprocess.run([sys.executable, str(BENCHMARKS / "ttlx_side.py"), "train_step", "--model", "resnet50-ttl2",
                           "--batch-size", "2", "--image-size", "32", "--steps", "1", "--warmup", "1"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = protocol.parse_result(done.stdout)
    assert result["programs"].startswith("compiled in a helper") and result["helper_s"] > 0
    assert len(list((tmp_path / "cache").rglob("jit_train*-cache"))) == 1


def test_variant_probe_variants_compute_what_they_replace(monkeypatch):
    """The GPU probe's variants (the formulations ttlx ran on accelerators before RESULTS section 7.2) must be
    the same network: two-pass against one-pass BatchNorm statistics, JAX's pooling gradient against ttlx's,
    the plain stem convolution against the space-to-depth one; each swap is undone."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import variant_probe

    from ttlx.models import layers, ops

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # ttlx's accelerator formulations
    activations = 3.0 + jax.random.normal(jax.random.key(2), (4, 8, 8, 16))
    for theirs, ours in zip(variant_probe.two_pass_moments(activations), layers.batch_moments(activations)):
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    pooled = 1.0 + jax.random.normal(jax.random.key(3), (2, 16, 16, 4))
    np.testing.assert_array_equal(variant_probe.jax_pool(pooled), layers.max_pool_3x3_s2(pooled))
    grads = [jax.grad(lambda v, pool=pool: jnp.sum(pool(v) ** 2))(pooled)
             for pool in (variant_probe.jax_pool, layers.max_pool_3x3_s2)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)  # continuous inputs: no ties between taps
    x = jax.random.normal(jax.random.key(0), (2, 32, 24, 3))
    kernel = jax.random.normal(jax.random.key(1), (7, 7, 3, 8))

    def stem_jaxpr() -> str:  # a new function each time: JAX caches traces by function
        return str(jax.make_jaxpr(lambda: ops.conv_general_dilated(
            x, kernel, (2, 2), ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC")))())

    def stem():
        return ops.conv_general_dilated(x, kernel, (2, 2), ((3, 3), (3, 3)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

    with variant_probe.variants()["plain_stem"]():
        plain = stem()
        assert "f32[4,4,12,8]" not in stem_jaxpr()
    assert "f32[4,4,12,8]" in stem_jaxpr()
    np.testing.assert_allclose(stem(), plain, rtol=0, atol=2e-5 * float(np.abs(plain).max()))
    originals = (layers.batch_moments, ops._is_stem, layers.max_pool_3x3_s2)
    swapped = {}
    for name, context in variant_probe.variants().items():
        with context():
            now = (layers.batch_moments, ops._is_stem, layers.max_pool_3x3_s2)
            swapped[name] = {i for i in range(3) if now[i] is not originals[i]}
        assert (layers.batch_moments, ops._is_stem, layers.max_pool_3x3_s2) == originals, name
    assert swapped == {"base": set(), "two_pass_bn": {0}, "plain_stem": {1}, "jax_pool": {2}, "before": {0, 1, 2},
                       **{name: set() for name in variant_probe.XLA_OPTIONS}}


def test_variant_probe_compiler_option_variants_reach_xla_and_are_undone():
    """Every jit made inside an options variant compiles with its options: each shipped variant's options are
    ones this jaxlib knows (a misspelt one would fail the loan's build), an unknown option reaches XLA and is
    refused, and ``jax.jit`` is restored afterwards."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import variant_probe

    original = jax.jit
    contexts = variant_probe.variants()
    assert set(variant_probe.XLA_OPTIONS) <= set(contexts)
    for name in variant_probe.XLA_OPTIONS:
        with contexts[name]():
            plus_one = jax.jit(lambda x: x + 1)
        assert jax.jit is original, name
        np.testing.assert_array_equal(plus_one(jnp.ones(2)), 2.0)  # compiles here, after the context
    with variant_probe.compiler_options({"xla_no_such_option": 1}):
        broken = jax.jit(lambda x: x + 1)
    with pytest.raises(Exception, match="xla_no_such_option"):
        broken(jnp.ones(2))
    assert jax.jit is original


def test_variant_probe_rounds_keep_each_variants_program_and_pair_ratios_within_rounds():
    """A variant's program is compiled inside its swap and still runs after the swap is undone (no retrace:
    the rounds time the variant, not ttlx as shipped); ratios are taken within each round."""
    import argparse

    import variant_probe

    args = argparse.Namespace(image_size=32, batch_size=2, dtype="float32", steps=2)
    built = variant_probe.build("resnet50-ttl2", args, variant_probe.variants()["two_pass_bn"])
    assert built["steps"].train._cache_size() == 1  # compiled inside the swap
    timing = variant_probe.time_round(built, args)
    assert built["steps"].train._cache_size() == 1  # and not traced again outside it
    assert timing["synced_img_s"] > 0 and timing["in_flight_img_s"] > 0
    assert 0 < timing["dispatch_ms"] <= timing["in_flight_ms"] * 2
    rounds = [{"round": 0, "variant": "v", "model": "a", "synced_img_s": 6.0, "in_flight_img_s": 9.0},
              {"round": 0, "variant": "v", "model": "b", "synced_img_s": 4.0, "in_flight_img_s": 6.0},
              {"round": 1, "variant": "v", "model": "a", "synced_img_s": 2.0, "in_flight_img_s": 3.0},
              {"round": 1, "variant": "v", "model": "b", "synced_img_s": 2.0, "in_flight_img_s": 3.0},
              {"round": 0, "variant": "w", "model": "a", "synced_img_s": 100.0, "in_flight_img_s": 100.0}]
    summary = variant_probe.summarize(rounds, "v", ["a", "b"])
    assert summary["synced_ratio"] == 1.25 and summary["synced_ratio_range"] == [1.0, 1.5]
    assert summary["a synced_img_s"] == 4.0 and summary["b in_flight_img_s"] == 4.5
    assert variant_probe.rotated([1, 2, 3], 4) == [2, 3, 1]


def test_variant_probe_records_a_variant_that_fails_to_build_and_times_the_others(tmp_path, monkeypatch):
    """A loan must not lose the other variants to one whose options this jaxlib refuses."""
    import types

    import jax
    import jax.numpy as jnp
    import variant_probe

    from ttlx.runtime import process

    def build(model, args, context):
        with context():
            train = jax.jit(lambda s, batch: ({"w": s["w"] + batch}, jnp.sum(s["w"])))
            state = {"train": {"w": jnp.zeros(3)}}
            state["train"], loss = train(state["train"], jnp.ones(3))  # compiles inside the variant

        def step():
            state["train"], loss = train(state["train"], jnp.ones(3))
            loss.block_until_ready()

        return {"step": step, "steps": types.SimpleNamespace(train=train), "state": state, "batch": jnp.ones(3),
                "first_loss": float(loss), "first_s": 0.0}


    monkeypatch.setattr(process, "configure_process", dict)  # keep this test process's settings as they are
    monkeypatch.setattr(variant_probe, "build", build)
    monkeypatch.setitem(variant_probe.XLA_OPTIONS, "runtime_fusion", {"xla_no_such_option": True})
    out = tmp_path / "probe.jsonl"
    monkeypatch.setattr(sys, "argv", ["variant_probe.py", "--out", str(out), "--variants", "base", "runtime_fusion",
                                      "--rounds", "2", "--steps", "2"])
    variant_probe.main()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    failed = [r for r in records if r["kind"] == "failed"]
    assert {r["model"] for r in failed} == {"resnet50-ttl2", "resnet50-ftl"}
    assert all(r["variant"] == "runtime_fusion" and "xla_no_such_option" in r["error"] for r in failed)
    assert {(r["variant"], r["round"]) for r in records if r["kind"] == "round"} == {("base", 0), ("base", 1)}
    assert [r["variant"] for r in records if r["kind"] == "summary"] == ["base"]


def test_train_e2e_reads_each_epochs_rate_from_a_real_ttlx_train_run(tmp_path):
    """The end-to-end stage (gpu_stages.sh train_e2e): a whole `ttlx train` run per model and worker count,
    its epochs' images/s from the run's metrics.jsonl, epoch 1 (the compile) apart."""
    out = tmp_path / "e2e.json"
    done = subprocess.run([sys.executable, str(PROBES / "train_e2e.py"), "--json", str(out), "--models",
                           "resnet50-ttl2", "--images", "80", "--size", "40", "--batch-size", "8", "--image-size",
                           "32", "--dtype", "float32", "--epochs", "2", "--threads", "0", "--device-prefetch", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run, bad = json.loads(out.read_text())["runs"]
    # --workers left at auto: ttlx train without --num-workers (0 workers on this CPU)
    # each setting ran with the batches placed on the devices by a thread (TTLX_DEVICE_PREFETCH=2)
    assert (run["model"], run["workers"], run["threads"], run["prefetch"], len(run["epoch_img_s"])) == (
        "resnet50-ttl2", "auto", "default", 2, 2)
    assert run["img_s"] == run["epoch_img_s"][1] > 0 and run["first_epoch_img_s"] == run["epoch_img_s"][0]
    assert len(run["epoch_input_wait"]) == 2 and all(0 <= wait < 1 for wait in run["epoch_input_wait"])
    # a setting ttlx refuses (0 loader threads: TTLX_LOADER_THREADS=0) is a row with ttlx's own sentence
    assert "TTLX_LOADER_THREADS='0'" in bad["error"] and "at least 1" in bad["error"] and "epoch_img_s" not in bad
    assert "resnet50-ttl2" in done.stdout.splitlines()[-1] and "error" in done.stdout.splitlines()[-1]


def test_install_missing_picks_only_wheels_whose_distribution_is_not_installed(tmp_path):
    import install_missing

    for name in ("numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl", "Typing_Extensions-4.0-py3-none-any.whl",
                 "ttlx_no_such.dist-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a wheel")
    assert install_missing.distribution_name(tmp_path / "ttlx_no_such.dist-1.0-py3-none-any.whl") == \
        "ttlx-no-such-dist"
    assert [w.name for w in install_missing.missing_wheels(tmp_path)] == ["ttlx_no_such.dist-1.0-py3-none-any.whl"]


def test_between_epochs_splits_each_epoch_of_a_real_run_into_steps_validation_and_the_rest(digits_dir, tmp_path,
                                                                                           tinynet):
    import between_epochs

    out = tmp_path / "between.json"
    workdir = tmp_path / "run"
    result = between_epochs.main(["--json", str(out), "--", "--dataset", "digits", "--data-dir", str(digits_dir),
                                  "--model", "tinynet", "--pretrained", "random", "--image-size", "32", "--bs", "64",
                                  "--max-epoch", "3", "--workdir", str(workdir)])
    assert json.loads(out.read_text()) == result
    assert len(result["epochs"]) == 3 == len((workdir / "metrics.jsonl").read_text().splitlines())
    assert all(epoch[key] > 0 for epoch in result["epochs"] for key in ("train_s", "val_s", "after_s"))
    later = result["epochs"][1:]  # epoch 1 holds the compile; the median of two epochs is their mean
    assert result["median_after_first"]["after_s"] == pytest.approx((later[0]["after_s"] + later[1]["after_s"]) / 2)
    # the train steps' host parts: the loader's share is within what the run logged as its input wait
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for epoch, row in zip(result["epochs"], logged):
        parts, steps = epoch["step_ms"], epoch["steps"]
        assert steps > 0
        assert list(parts) == ["loader", "copy", "poll", "display", "rest"]
        assert all(parts[name] > 0 for name in ("loader", "copy", "poll", "rest"))
        assert parts["loader"] * steps / 1e3 <= row["input_wait"] * epoch["train_s"] + 1e-3
    import ttlx.training.loop
    import ttlx.training.sharding
    from ttlx.training.epoch_writer import EpochWriter

    assert ttlx.training.loop.shard_batch is ttlx.training.sharding.shard_batch and EpochWriter.poll.__name__ == "poll"


def test_gpu_stages_runs_only_scripts_that_exist_and_refuses_an_unknown_stage(tmp_path):
    """Every script a stage runs is in the tree, from any folder; a misspelt stage stops before anything runs."""
    script = TOOLS / "gpu_stages.sh"
    paths = re.findall(r'"\$root/([^"]+)"', script.read_text())
    assert "benchmarks/run.py" in paths and all((ROOT / path).is_file() for path in paths), paths
    done = subprocess.run(["bash", str(script), str(tmp_path / "out"), sys.executable, "xla_options", "no_such_stage"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "unknown stage 'no_such_stage'" in done.stderr
    for stage in ("resnet50_targets", "resnet50_bs64", "prefetch", "between_epochs", "xla_options"):
        assert stage in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_probe_has_its_line_in_the_probes_readme():
    readme = (PROBES / "README.md").read_text()
    probes = sorted(path.name for path in PROBES.glob("*.py"))
    assert probes and all(f"`{name}`" in readme for name in probes), probes
