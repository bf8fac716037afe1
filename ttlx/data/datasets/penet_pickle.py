"""Reading PENet's ``series_list.pkl`` without running code: CTPE records rebuilt as plain dicts.

The file is a pickled list of ``ct.ct_pe.CTPE`` objects. A pickle can name any importable function and
call it while it loads; this unpickler resolves one name only, the CTPE class, to a stand-in that keeps the
attributes as data (plus ``copyreg``'s helpers that protocols 0 and 1 use to rebuild a plain object), and
refuses every other name with one sentence. The rebuilt attributes are then checked to be plain values
(numbers, strings, lists of slice numbers).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from ttlx.errors import DataError

_FIELDS = ("study_num", "slice_thickness", "is_positive", "num_slices", "pe_idxs", "phase", "type")
_PLAIN = (int, float, str, bool, type(None))


class _Refused(pickle.UnpicklingError):
    """A name (or a construction) the file asks for that is not part of a CTPE record."""


class _CTPE:
    """Stand-in for ``ct.ct_pe.CTPE``: takes the pickled attributes and nothing else."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) from __reduce_ex__
            state = state[0]
        if not isinstance(state, dict):
            raise _Refused("a CTPE record whose state is not a dict of attributes")
        self.__dict__["_state"] = dict(state)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` for protocols 0 and 1, limited to the CTPE stand-in on ``object``."""
    if cls is not _CTPE or base is not object or state is not None:
        raise _Refused("a copyreg reconstruction of something other than a CTPE record")
    return _CTPE()


_ALLOWED = {
    ("ct.ct_pe", "CTPE"): _CTPE,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def load_series_list(path: Path) -> list[dict]:
    """The CTPE records of ``path`` as dicts of plain values; DataError for anything else in the file."""
    try:
        data = Path(path).read_bytes()
        records = _Unpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as err:
        raise DataError(f"{path} holds {err}, not only PENet CTPE records; ttlx reads nothing else from "
                        "series_list.pkl (use the file the PENet release ships, or a manifest.csv).") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as err:
        raise DataError(f"{path} is not a readable series_list.pkl ({type(err).__name__}); copy it again.") from None
    if not isinstance(records, list) or not all(isinstance(r, _CTPE) for r in records):
        raise DataError(f"{path} is not a list of PENet CTPE records; use the series_list.pkl of the PENet release.")
    return [_plain(r, path) for r in records]


def _plain(record: _CTPE, path: Path) -> dict:
    state = record.__dict__.get("_state")
    if state is None:
        raise DataError(f"{path} holds a CTPE record without attributes; copy the file again.")
    missing = [f for f in ("study_num", "is_positive", "phase") if f not in state]
    if missing:
        raise DataError(f"{path} holds a CTPE record without {', '.join(missing)}; copy the file again.")
    out = {}
    for key in _FIELDS:
        value = state.get(key)
        if key == "pe_idxs":
            value = list(value or [])
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
                raise DataError(f"{path} holds a CTPE record whose pe_idxs are not slice numbers.")
        elif not isinstance(value, _PLAIN):
            raise DataError(f"{path} holds a CTPE record whose {key} is a {type(value).__name__}, not a plain value.")
        out[key] = value
    return out
