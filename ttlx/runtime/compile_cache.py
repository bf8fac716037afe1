"""JAX's persistent compilation cache made safe for several processes writing one folder at once.

JAX's file cache (``jax._src.lru_cache.LRUCache``) writes an entry in place (``<key>-cache``), then its access
time (``<key>-atime``), and its eviction reads the access time of every entry. Several ttlx processes share
one cache (the hosts of a multi-host run on a shared home, a sweep beside another run), and:

- a process killed between the two writes (``kill -9``, a time limit) left an entry without an access time,
  and from then on every process's every write failed in the eviction with "Error writing persistent
  compilation cache entry ... FileNotFoundError: ...-atime" (so nothing new was cached);
- a process killed, or a disk filled, in the middle of an entry left it torn, for the next reader;
- a writer without eviction (``JAX_COMPILATION_CACHE_DIR`` set without a size limit) takes no lock and
  writes no access times at all.

:class:`SafeLRUCache` writes the access time first and each file through a temporary name renamed into place
(so an entry is whole or absent, and never without its access time), and its eviction takes a missing access
time from the entry's modification time and skips files that another process removed meanwhile. Reads are
JAX's (under its file lock when eviction is on). :func:`install` makes JAX use it.
"""

from __future__ import annotations

import heapq
import os
import time
import uuid
from pathlib import Path

CACHE_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"  # jax._src.lru_cache's names


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or is left as it was (a temporary file in the same folder, renamed)."""
    path = Path(os.fspath(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def install() -> bool:
    """Make JAX's compilation cache use :class:`SafeLRUCache` (call before the first compile); False where this
    JAX has no such cache to replace."""
    try:
        from jax._src import compilation_cache, lru_cache
    except ImportError:
        return False
    base = getattr(lru_cache, "LRUCache", None)
    if base is None or not hasattr(compilation_cache, "LRUCache"):
        return False
    if getattr(compilation_cache.LRUCache, "ttlx_safe", False):
        return True

    class SafeLRUCache(base):
        """JAX's LRU file cache with whole-or-nothing writes and an eviction that tolerates other writers."""

        ttlx_safe = True

        def put(self, key: str, value: bytes) -> None:
            if not key:
                raise ValueError("key cannot be empty")
            if self.eviction_enabled and len(value) > self.max_size:
                return super().put(key, value)  # JAX warns and stores nothing
            cache_path = self.path / f"{key}{CACHE_SUFFIX}"
            if self.eviction_enabled:
                self.lock.acquire(timeout=self.lock_timeout_secs)
            try:
                if cache_path.exists():
                    return
                self._evict_if_needed(additional_size=len(value))
                write_atomic(self.path / f"{key}{ATIME_SUFFIX}", time.time_ns().to_bytes(8, "little"))
                write_atomic(cache_path, value)
            finally:
                if self.eviction_enabled:
                    self.lock.release()

        def _evict_if_needed(self, *, additional_size: int = 0) -> None:
            if not self.eviction_enabled:
                return
            entries, total = [], 0
            for cache_path in self.path.glob(f"*{CACHE_SUFFIX}"):
                key = cache_path.name.removesuffix(CACHE_SUFFIX)
                try:
                    stat = os.stat(os.fspath(cache_path))
                    atime_path = self.path / f"{key}{ATIME_SUFFIX}"
                    used = (int.from_bytes(atime_path.read_bytes(), "little") if atime_path.exists()
                            else stat.st_mtime_ns)
                except OSError:  # removed by another process meanwhile
                    continue
                total += stat.st_size
                heapq.heappush(entries, (used, key, stat.st_size))
            while entries and total > self.max_size - additional_size:
                _, key, size = heapq.heappop(entries)
                (self.path / f"{key}{CACHE_SUFFIX}").unlink(missing_ok=True)
                (self.path / f"{key}{ATIME_SUFFIX}").unlink(missing_ok=True)
                total -= size

    compilation_cache.LRUCache = SafeLRUCache
    return True
