"""Reading a safetensors weights file with every dtype checked from its header before any data is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.errors import WeightsError
from ttlx.models.weights import convert

# safetensors' dtype codes as numpy names (for the messages); others (F8_*, F4...) are shown lower-cased
SAFETENSORS_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
                      "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16",
                      "BF16": "bfloat16", "F32": "float32", "F64": "float64", "C64": "complex64"}


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; each dtype is checked from the header before any data
    is read, and ``num_batches_tracked`` counters are skipped."""
    import ml_dtypes  # noqa: F401  (numpy learns bfloat16, so BF16 tensors load)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as handle:
            metadata = dict(handle.metadata() or {})
            keys = [k for k in handle.keys() if not k.endswith(convert.TORCH_ONLY_SUFFIXES)]
            for key in keys:
                code = handle.get_slice(key).get_dtype()
                convert.check_dtype(key, SAFETENSORS_DTYPES.get(code, code.lower()), str(path))
            tensors = {key: handle.get_tensor(key) for key in keys}
    except SafetensorError as err:
        raise WeightsError(f"{path} is truncated or corrupt ({err}); download it again.") from None
    return tensors, metadata
