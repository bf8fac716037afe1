"""``ttlx prepare``: scan a dataset, store it as ArrayRecord, write its splits, all or nothing."""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

import numpy as np

from ttlx.config import check_int, check_seed
from ttlx.data import builder, store
from ttlx.data.progress import console, progress
from ttlx.data.spec import Catalog, DatasetSpec, check_catalog
from ttlx.data.split_files import write_all_splits
from ttlx.errors import ConfigError, DataError

BAD_IMAGE_POLICIES = ("stop", "skip")


def prepare_dataset(
    dataset: str,
    data_dir: str | Path | None = None,
    manual_dir: str | Path | None = None,
    *,
    seed: int = 0,
    splits_from: str | Path | None = None,
    max_size: int | None = None,
    on_bad_image: str = "stop",
    force: bool = False,
    show_progress: bool = False,
    name: str | None = None,
    **options: Any,
) -> Path:
    """Build ``dataset`` under ``<data_dir>/<name>/`` and return that folder.

    ``name`` stores a user's own data (``folder``, ``csv``, ``volumes``) under a name of its own, which
    ``--dataset NAME`` then opens everywhere. Nothing is rebuilt when the folder already holds the dataset
    prepared from the same manual dir with the same settings; other files or settings are refused unless
    ``force``. The build happens in a hidden sibling folder that replaces the old one only once it is
    complete, so an interrupted run never leaves a dataset that looks prepared.
    """
    from ttlx.registry import datasets

    kind = datasets.resolve(dataset)
    spec: DatasetSpec = datasets.get(kind)
    name = _own_name(kind, spec, name)
    settings = _settings(name, spec, seed, splits_from, max_size, on_bad_image, options)
    if manual_dir is not None and not spec.needs_manual_dir:
        raise ConfigError(f"Dataset '{kind}' needs no downloaded files; leave out --manual-dir.")
    source = str(Path(manual_dir).expanduser().resolve()) if manual_dir is not None else None
    data_dir = store.resolve_data_dir(data_dir)
    root = data_dir / name
    if data_dir.is_dir():  # what killed builds left: put a moved-aside dataset back, delete the rest
        _restore_interrupted_swap(data_dir, name)
        _remove_stale(data_dir, name)
    if _already_prepared(root, kind, source, settings, force, spec.nameable):
        return root
    _refuse_to_overwrite(root, manual_dir)
    # scanned before anything is created: bad options or missing files leave no folder behind
    catalog = _scan(name, spec, manual_dir, settings["options"], show_progress)
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]  # removed again if the build fails
    data_dir.mkdir(parents=True, exist_ok=True)
    work = data_dir / f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    done, free = False, shutil.disk_usage(data_dir).free
    try:
        work.mkdir()
        meta = _build(work, name, spec, catalog, settings, show_progress)
        meta.update(dataset=kind, manual_dir=source)
        store.write_marker(work, meta)
        _swap_in(work, root)
        done = True
    except (OSError, RuntimeError) as err:  # the ArrayRecord writer reports a full disk as a RuntimeError
        if not store.disk_full(err):
            raise
        raise store.disk_full_error(data_dir, name, free) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for folder in created if not done else ():
            with suppress(OSError):
                folder.rmdir()  # only while empty: a folder something else wrote into stays
    return root


def _own_name(kind: str, spec: DatasetSpec, name: str | None) -> str:
    """The folder (and ``--dataset``) name: the dataset's own, or the ``--name`` a user's data was given."""
    from ttlx.registry import UnknownNameError, datasets

    if name is None or name == kind:
        return kind
    if not spec.nameable:
        raise ConfigError(f"Dataset '{kind}' takes no --name; only your own data (folder, csv, volumes) does.")
    if not store.OWN_NAME.fullmatch(name):
        raise ConfigError(
            f"--name '{name}' is not a usable name; use up to 64 letters, digits, '_', '-' or '.', starting with "
            "a letter or digit."
        )
    try:
        taken = datasets.resolve(name)
    except UnknownNameError:
        return name
    raise ConfigError(f"--name '{name}' is already the dataset '{taken}'; choose another name.")


def _settings(name, spec, seed, splits_from, max_size, on_bad_image, options) -> dict:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(f"--{o.replace('_', '-')}" for o in spec.options)
        takes = f"it takes {accepted}" if accepted else "it takes no dataset options"
        given = ", ".join(f"--{o.replace('_', '-')}" for o in unknown)
        raise ConfigError(f"Dataset '{name}' does not take {given}; {takes}.")
    check_seed(seed)
    if max_size is not None:
        check_int(max_size, "--max-size", 0, what="0 (keep the images' size) or a number of pixels")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"--on-bad-image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got '{on_bad_image}'.")
    return {
        "seed": int(seed),
        "max_size": int(spec.max_size if max_size is None else max_size),
        "on_bad_image": on_bad_image,
        "splits_from": str(Path(splits_from).expanduser().resolve()) if splits_from else None,
        "options": {**spec.options, **{k: _plain(v) for k, v in options.items()}},
    }


def _plain(value: Any) -> Any:
    """Option values as JSON keeps them (paths absolute, so a re-run from elsewhere compares equal)."""
    return str(Path(value).expanduser().resolve()) if isinstance(value, Path) else value


def _already_prepared(root: Path, kind: str, source: str | None, settings: dict, force: bool, nameable: bool) -> bool:
    """True when ``root`` holds this very build; a DataError when it holds another one (other files, another
    dataset or other settings), since rebuilding would silently replace what runs were trained on."""
    marker = root / store.MARKER
    if force or not marker.is_file():
        return False
    meta = store.load_prepared(root.name, root.parent).meta
    previous = meta.get("settings")
    before = meta.get("dataset", root.name)
    keep_both = "pass another --name to keep both, or " if nameable else ""
    where = f"Dataset '{root.name}' is already prepared in {root.parent}"
    if before != kind:
        raise DataError(f"{where} from '{before}', not '{kind}'; {keep_both or 'choose another --name, or '}"
                        "pass --force to replace it.")
    stored_dir = meta.get("manual_dir")
    if source is not None and stored_dir and Path(stored_dir).is_absolute() and stored_dir != source:
        raise DataError(f"{where} from {stored_dir}, not {source}; {keep_both}pass --force to replace it.")
    if previous == settings:
        return True
    changed = sorted(k for k in settings if previous is None or previous.get(k) != settings[k])
    option_names = sorted(k for k in settings.get("options", {})
                          if (previous or {}).get("options", {}).get(k) != settings["options"][k])
    if changed == ["options"] and option_names:
        changed = [f"--{o.replace('_', '-')}" for o in option_names]
    raise DataError(f"{where} with other settings ({', '.join(changed)}); {keep_both}pass --force to rebuild it.")


def _refuse_to_overwrite(root: Path, manual_dir) -> None:
    """Never replace a folder ttlx did not make, nor one holding the raw files being read."""
    if manual_dir is not None and Path(manual_dir).expanduser().resolve().is_relative_to(root.resolve()):
        raise DataError(
            f"The manual dir {manual_dir} is inside {root}, which prepare replaces; "
            "move the downloaded files elsewhere or choose another --data-dir."
        )
    if root.is_dir() and not (root / store.MARKER).is_file() and any(root.iterdir()):
        raise DataError(f"{root} exists and is not a prepared dataset; move it away or choose another --data-dir.")


def _scan(name: str, spec: DatasetSpec, manual_dir, options: dict, show_progress: bool) -> Catalog:
    status = console().status(f"Reading the list of images of '{name}'") if show_progress else nullcontext()
    with status:
        catalog = spec.scan(Path(manual_dir).expanduser() if manual_dir is not None else None, **options)
    check_catalog(name, catalog)
    return catalog


def _build(work: Path, name: str, spec: DatasetSpec, catalog: Catalog, settings: dict, show_progress: bool) -> dict:
    with progress(show_progress, f"Storing {name}", len(catalog.examples)) as advance:
        result = builder.build_records(
            work / "records", name, spec, catalog, max_size=settings["max_size"], advance=advance
        )
    if result.bad and settings["on_bad_image"] == "stop":
        listing = ", ".join(f"{file} ({why})" for file, why in result.bad)
        raise DataError(
            f"{len(result.bad)} {'volume' if spec.volumetric else 'image'}(s) of '{name}' could not be read: "
            f"{listing}; replace or remove them, "
            "or pass --on-bad-image skip to leave them out."
        )
    shutil.rmtree(work / "records" / ".dl", ignore_errors=True)
    examples = [catalog.examples[p] for p in result.written]
    labels, strata = _label_arrays(spec, examples, len(catalog.classes))
    store.write_index(work, [e.id for e in examples], labels, [e.group_key for e in examples], strata)
    _write_skipped(work, result.bad)
    with console().status("Writing the split files") if show_progress else nullcontext():
        summary = write_all_splits(work, spec, catalog.classes, examples, labels, strata, settings)
    return {
        "name": name,
        "description": spec.description,
        "classes": list(catalog.classes),
        "multilabel": spec.multilabel,
        "channels": spec.channels,
        "encoding": spec.encoding,
        "pad_square": spec.pad_square,
        "seed": settings["seed"],
        "settings": settings,
        "records": str(result.records_dir.relative_to(work)),
        "num_examples": len(examples),
        "skipped": [{"file": f, "reason": r} for f, r in result.bad],
        **summary,
    }


def _label_arrays(spec: DatasetSpec, examples, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if spec.multilabel:
        labels = np.asarray([e.label for e in examples], dtype=np.int8).reshape(-1, num_classes)
        frequencies = (labels == 1).sum(axis=0)
    else:
        labels = np.asarray([int(e.label) for e in examples], dtype=np.int64)
        frequencies = np.bincount(labels, minlength=num_classes)
    strata = np.asarray([spec.stratify_key(e.label, frequencies) for e in examples], dtype=np.int64)
    return labels, strata


def _write_skipped(work: Path, bad: list[tuple[str, str]]) -> None:
    if bad:
        with open(work / "skipped.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "reason"])
            writer.writerows(bad)


def _move(source: Path, target: Path) -> None:
    os.rename(source, target)  # atomic on one filesystem


def _swap_in(work: Path, root: Path) -> None:
    """Put the finished build at ``root``; an old version is moved aside first and deleted after.

    A kill between the two renames leaves no ``root`` but a complete ``.<name>.old-*``:
    :func:`_restore_interrupted_swap` puts it back at the start of the next prepare.
    """
    old = None
    if root.exists():
        old = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _move(root, old)
    _move(work, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _restore_interrupted_swap(data_dir: Path, name: str) -> None:
    """Move back a complete previous dataset that a killed swap had moved aside (its process is gone)."""
    root = data_dir / name
    if root.exists():
        return
    for old in sorted(data_dir.glob(f".{name}.old-*-*")):
        pid = old.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)) and (old / store.MARKER).is_file():
            _move(old, root)
            return


def _remove_stale(data_dir: Path, name: str) -> None:
    """Delete leftovers of killed builds of ``name`` (their process is gone)."""
    for path in data_dir.glob(f".{name}.*-*-*"):
        pid = path.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
