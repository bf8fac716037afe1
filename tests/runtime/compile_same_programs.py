"""Compile N small programs into a persistent cache: ``python compile_same_programs.py CACHE N``.

Prints ``hits=K`` (programs loaded from the cache). Run by the concurrent-cache test, several at once.
"""

from __future__ import annotations

import sys
import warnings

warnings.simplefilter("always")

if __name__ == "__main__":
    import jax
    import jax.numpy as jnp

    from ttlx.runtime.process import enable_compilation_cache

    enable_compilation_cache(sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kwargs: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
    for i in range(int(sys.argv[2])):
        jax.jit(lambda x, i=i: jnp.sin(x) * i + jnp.cos(x * i).sum())(jnp.ones((i + 1, 7))).block_until_ready()
    print(f"hits={len(hits)}", flush=True)
