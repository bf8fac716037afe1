"""Settings of the process that runs ttlx: allocator, XLA flags, compilation cache, precompiling in a helper."""
