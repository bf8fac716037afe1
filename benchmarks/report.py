"""Turning the two sides' measurements into the benchmark JSON (DESIGN.md's contract) and a text table.

Every ratio is oriented so that above 1 means ttlx is better: images/s ttlx over reference, latency
and memory reference over ttlx. A measurement that failed on either side keeps its error and gets no
ratio.
"""

from __future__ import annotations

HEADLINE_MODEL = "resnet50-ftl"  # the model behind the contract's ``train_step`` entry
TARGETS = {"train_step": 1.0, "pipeline": 2.0, "startup_s": 0.3, "cache_ratio": 0.25}
# The GPU targets: ResNet50 FTL at 224 px in bfloat16 (images/s on one H100, and over the
# reference on the same card), and TTL-2's step over FTL's.
# ``ttl2_over_ftl_in_flight``: the same 1.3 on the rates of ``ttlx train``'s own loop (next step in flight)
GPU_TARGETS = {"ftl_img_s": 2500.0, "ftl_ratio": 1.5, "ttl2_over_ftl": 1.3, "ttl2_over_ftl_in_flight": 1.3}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def value(result: dict | None, key: str) -> float | None:
    """``result[key]``, or None when the side failed (its result holds ``error``) or did not run."""
    if not result or "error" in result:
        return None
    return result.get(key)


def errors(**sides: dict | None) -> dict:
    return {f"{name}_error": result["error"] for name, result in sides.items() if result and "error" in result}


def devices_differ(ttlx: dict | None, reference: dict | None) -> bool:
    """One side on the CPU and the other on an accelerator (e.g. a torch build without this GPU's CUDA)."""
    devices = [value(side, "device") for side in (ttlx, reference)]
    return None not in devices and (devices[0].lower() == "cpu") != (devices[1].lower() == "cpu")


def throughput_entry(ttlx: dict | None, reference: dict | None, **extra) -> dict:
    """{ttlx_img_s, reference_img_s, ratio, ...extra} of one images/s comparison (no ratio across devices)."""
    ours, theirs = value(ttlx, "img_s"), value(reference, "img_s")
    entry = {"ttlx_img_s": ours, "reference_img_s": theirs, "ratio": ratio(ours, theirs), **extra,
             **errors(ttlx=ttlx, reference=reference)}
    if devices_differ(ttlx, reference):
        entry.update(ratio=None, device_mismatch=[ttlx["device"], reference["device"]])
    params = [value(ttlx, "params"), value(reference, "params")]
    if None not in params and params[0] != params[1]:  # not the same network: the ratio means nothing
        entry.update(ratio=None, params_mismatch=params)
    return entry


SAME_BYTES = ("same JPEG bytes: ttlx prepares the JPEGs at full size (max_size=0, re-encoded at quality 95) and "
              "the reference decodes the very files ttlx stored")
AS_SHIPPED = ("ttlx as shipped: prepare's default max_size stores the shorter side at <= 256 px (a one-time cost "
              "at prepare time); the reference decodes the original full-size JPEGs. Not identical bytes: ttlx "
              "crops from the smaller stored image; both output the same crop size")


def pipeline_entry(ttlx: dict | None, reference: dict | None, *, target: float, **extra) -> dict:
    """An input-pipeline comparison: images/s of both sides, whether the ratio reaches ``target``, and
    what ttlx had stored (image sizes, files byte-identical to the originals, prepare time)."""
    entry = throughput_entry(ttlx, reference, **extra)
    entry.update(target=target, meets_target=None if entry["ratio"] is None else entry["ratio"] >= target)
    stored = value(ttlx, "stored")
    if stored:
        entry["ttlx_stored"] = {key: stored.get(key) for key in ("count", "sizes", "identical_to_original", "mean_kib")}
        entry["ttlx_prepare_s"] = value(ttlx, "prepare_s")
    return entry


def latency_entry(model: str, ttlx: dict | None, reference: dict | None) -> dict:
    ours, theirs = value(ttlx, "latency_ms"), value(reference, "latency_ms")
    return {"model": model, "ttlx_ms": ours, "reference_ms": theirs, "speedup": ratio(theirs, ours),
            **errors(ttlx=ttlx, reference=reference)}


def memory_entry(ttlx: dict | None, reference: dict | None, **extra) -> dict:
    """Peak resident memory of a short training run (and peak device memory on accelerators)."""
    ours, theirs = value(ttlx, "peak_rss_mib"), value(reference, "peak_rss_mib")
    return {"ttlx_peak_rss_mib": ours, "reference_peak_rss_mib": theirs, "ratio": ratio(theirs, ours),
            "ttlx_device_peak_mib": value(ttlx, "device_peak_mib"),
            "reference_device_peak_mib": value(reference, "device_peak_mib"), **extra,
            **errors(ttlx=ttlx, reference=reference)}


def compile_entry(first: dict | None, second: dict | None) -> dict:
    """First-run against second-run (persistent cache warm) times of the train step."""
    def traced(result):
        parts = [value(result, "trace_s"), value(result, "compile_s")]
        return None if None in parts else sum(parts)

    return {"first_compile_s": value(first, "compile_s"), "second_compile_s": value(second, "compile_s"),
            "compile_ratio": ratio(value(second, "compile_s"), value(first, "compile_s")),
            "first_trace_and_compile_s": traced(first), "second_trace_and_compile_s": traced(second),
            "trace_and_compile_ratio": ratio(traced(second), traced(first)),
            **errors(first=first, second=second)}


def gpu_targets(steps: list[dict], device: str | None) -> dict:
    """The GPU targets that this run's train steps can answer: value, target and whether it is met.

    The images/s target is stated for an H100; ``device`` records the card it was measured on.
    """
    rows = {row["model"]: row for row in steps}
    ftl, ttl2 = rows.get(HEADLINE_MODEL), rows.get("resnet50-ttl2")
    values = {"ftl_img_s": ftl and ftl["ttlx_img_s"], "ftl_ratio": ftl and ftl["ratio"],
              "ttl2_over_ftl": ratio(ttl2 and ttl2["ttlx_img_s"], ftl and ftl["ttlx_img_s"]),
              "ttl2_over_ftl_in_flight": ratio(ttl2 and ttl2.get("ttlx_in_flight_img_s"),
                                               ftl and ftl.get("ttlx_in_flight_img_s"))}
    return {"device": device, **{key: {"value": values[key], "target": target, "met": values[key] >= target}
                                 for key, target in GPU_TARGETS.items() if values[key] is not None}}


def in_flight(ttlx: dict | None) -> dict:
    """``ttlx_in_flight_img_s`` where the ttlx side timed ``ttlx train``'s loop too (on accelerators only)."""
    rate = value(ttlx, "in_flight_img_s")
    return {} if rate is None else {"ttlx_in_flight_img_s": rate}


def summarize(measured: dict, settings: dict) -> dict:
    """The benchmark JSON from the raw side results that ``run.py`` collected."""
    steps = [throughput_entry(pair.get("ttlx"), pair.get("reference"), model=model,
                              batch_size=settings["batch_size"], image_size=settings["image_size"],
                              ttlx_programs=value(pair.get("ttlx"), "programs"), **in_flight(pair.get("ttlx")))
             for model, pair in measured.get("train_step", {}).items()]
    headline = next((row for row in steps if row["model"] == HEADLINE_MODEL), steps[0] if steps else None)
    out = {"settings": settings, "train_step": headline, "train_steps": steps}
    if "train_step_warm" in measured:
        out["train_steps_warm_cache"] = [
            {**throughput_entry(pair.get("ttlx"), pair.get("reference"), model=model,
                                batch_size=settings["batch_size"], image_size=settings["image_size"]),
             "ttlx_programs": "loaded from a persistent cache filled by an earlier process"}
            for model, pair in measured["train_step_warm"].items()]
    if steps and settings.get("backend", "cpu") != "cpu":
        devices = [value(pair.get("ttlx"), "device") for pair in measured["train_step"].values()]
        out["gpu_targets"] = gpu_targets(steps, next((d for d in devices if d), None))
    if "pipeline" in measured:
        pair = measured["pipeline"]
        common = {"batch_size": settings["pipeline_batch_size"], "image_size": settings["image_size"],
                  "target": TARGETS["pipeline"]}
        out["pipeline"] = pipeline_entry(pair.get("ttlx"), pair.get("reference"), comparison=SAME_BYTES, **common)
        shipped = pair.get("as_shipped")
        if shipped:
            out["pipeline_as_shipped"] = pipeline_entry(shipped.get("ttlx"), shipped.get("reference"),
                                                        comparison=AS_SHIPPED, **common)
    if "latency" in measured:
        out["latency"] = [latency_entry(model, pair.get("ttlx"), pair.get("reference"))
                          for model, pair in measured["latency"].items()]
    if "compile" in measured:
        out["compile"] = compile_entry(measured["compile"].get("first"), measured["compile"].get("second"))
    if "memory" in measured:
        pair = measured["memory"]
        out["memory"] = memory_entry(pair.get("ttlx"), pair.get("reference"),
                                     batch_size=settings["memory_batch_size"], image_size=settings["image_size"])
    for key in ("startup", "train_step_reference_tuned_malloc"):
        if key in measured:
            out[key] = measured[key]
    return out


HELPER_NOTE = ", programs compiled in a helper process as `ttlx train` does"


def _fmt(number: float | None, digits: int = 2) -> str:
    return "-" if number is None else f"{number:.{digits}f}"


def table_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(measurement, ttlx, reference, ratio) rows of the printed table."""
    rows = [(f"train step {r['model']}{HELPER_NOTE if 'helper' in (r.get('ttlx_programs') or '') else ''} (img/s)",
             _fmt(r["ttlx_img_s"]), _fmt(r["reference_img_s"]), _fmt(r["ratio"]))
            for r in summary.get("train_steps", [])]
    rows += [(f"train step {r['model']}, next step in flight as ttlx train runs (img/s)",
              _fmt(r["ttlx_in_flight_img_s"]), "-", "-")
             for r in summary.get("train_steps", []) if r.get("ttlx_in_flight_img_s") is not None]
    rows += [(f"train step {r['model']}, programs from the cache (img/s)", _fmt(r["ttlx_img_s"]),
              _fmt(r["reference_img_s"]), _fmt(r["ratio"])) for r in summary.get("train_steps_warm_cache", [])]
    for key, label in (("pipeline", "input pipeline, same JPEG bytes (img/s)"),
                       ("pipeline_as_shipped", "input pipeline, ttlx as shipped (<=256 px stored) (img/s)")):
        if summary.get(key):
            p = summary[key]
            rows.append((label, _fmt(p["ttlx_img_s"], 1), _fmt(p["reference_img_s"], 1), _fmt(p["ratio"])))
    rows += [(f"batch-1 latency {r['model']} (ms)", _fmt(r["ttlx_ms"]), _fmt(r["reference_ms"]),
              _fmt(r["speedup"])) for r in summary.get("latency", [])]
    if summary.get("startup"):
        s = summary["startup"]
        rows.append(("start-up: `ttlx --help` vs `import torch` (s)", _fmt(s.get("ttlx_help_s"), 3),
                     _fmt(s.get("reference_import_s"), 3),
                     _fmt(ratio(s.get("reference_import_s"), s.get("ttlx_help_s")))))
    if summary.get("compile"):
        c = summary["compile"]
        rows.append(("train-step compile, first run (s)", _fmt(c["first_compile_s"], 1), "eager", "-"))
        rows.append(("  second run, persistent cache (s)", _fmt(c["second_compile_s"], 1), "eager",
                     _fmt(c["compile_ratio"])))
    if summary.get("memory"):
        m = summary["memory"]
        rows.append((f"peak RSS, batch {m['batch_size']} (MiB)", _fmt(m["ttlx_peak_rss_mib"], 0),
                     _fmt(m["reference_peak_rss_mib"], 0), _fmt(m["ratio"])))
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    header = ("measurement", "ttlx", "reference", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)
