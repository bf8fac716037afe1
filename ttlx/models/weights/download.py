"""Downloading pretrained weights into the ttlx cache, each file verified before it is used.

Hub copies come through ``huggingface_hub`` and are checked against the SHA-256 the hub publishes for the
file; torchvision's own URLs are the fallback and are checked against the hash prefix in their file name
(``resnet50-0676ba61.pth``), as torchvision does. A file that fails its check is deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ttlx import settings
from ttlx.errors import WeightsError
from ttlx.models.architecture import HubWeights

TORCHVISION_HASH = re.compile(r"-([0-9a-f]{6,})\.[a-z]+$")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Unreachable(Exception):
    """A download source could not be reached (no network, hub down, offline mode)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str, what: str, *, delete: bool = True) -> None:
    """Check that the SHA-256 of ``path`` starts with ``expected``; on a mismatch delete a downloaded file
    (and the blob a hub-cache link points to) and raise. A user's own file (``delete=False``) is kept."""
    actual = sha256_of(path)
    if actual.startswith(expected.lower()):
        return
    got = f"got {actual[:16]}..., expected {expected[:16]}..."
    if not delete:
        raise WeightsError(f"{what} failed its SHA-256 check ({got}): it is damaged or not the original; "
                           f"download it again.")
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    raise WeightsError(f"{what} failed its SHA-256 check ({got}) and was deleted; run the command again to "
                       f"download it anew.")


def hub_url(hub: HubWeights) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(hub.repo_id, hub.filename, revision=hub.revision)


def from_hub(hub: HubWeights) -> Path:
    """The hub file, from the cache or downloaded, verified against the hub's published SHA-256."""
    import huggingface_hub as hf

    if not hub.repo_id:  # weights with no hub copy (r3d_18's Kinetics-400): torchvision's URL only
        raise Unreachable("no hub copy")
    folder = settings.cache_dir() / "hub"
    pinned = {"revision": hub.revision} if hub.revision else {}  # a pinned hub commit, else the newest
    cached = hf.try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=folder, **pinned)
    if isinstance(cached, str):
        blob_name = Path(os.path.realpath(cached)).name  # the hub cache names LFS blobs by their SHA-256
        if SHA256_HEX.fullmatch(blob_name):
            verify(Path(cached), blob_name, f"The cached {hub.repo_id}/{hub.filename}")
        if hub.sha256:
            verify(Path(cached), hub.sha256, f"The cached {hub.repo_id}/{hub.filename}")
        return Path(cached)
    if hf.constants.HF_HUB_OFFLINE:
        raise Unreachable("HF_HUB_OFFLINE is set")
    try:
        info = hf.HfApi().get_paths_info(hub.repo_id, [hub.filename], **pinned)
    except Exception as err:  # any transport failure means the hub is out of reach
        raise Unreachable(f"{type(err).__name__}: {err}") from err
    lfs = getattr(info[0], "lfs", None) if info else None
    if lfs is None:
        raise WeightsError(f"The hub publishes no SHA-256 for {hub.repo_id}/{hub.filename}, so ttlx will "
                           f"not use it; download the torchvision file and run `ttlx weights convert`.")
    if hub.sha256 and lfs.sha256 != hub.sha256:
        raise WeightsError(f"The hub now publishes another file for {hub.repo_id}/{hub.filename} (SHA-256 "
                           f"{lfs.sha256[:16]}..., ttlx pins {hub.sha256[:16]}...), so ttlx will not use it; "
                           f"report it, or convert a file you trust with `ttlx weights convert`.")
    try:
        path = Path(hf.hf_hub_download(hub.repo_id, hub.filename, cache_dir=folder, **pinned))
    except Exception as err:
        raise Unreachable(f"{type(err).__name__}: {err}") from err
    verify(path, lfs.sha256, f"The download of {hub.repo_id}/{hub.filename}")
    return path


def torchvision_hash_prefix(filename: str) -> str | None:
    match = TORCHVISION_HASH.search(filename)
    return match.group(1) if match else None


def from_torchvision(url: str, sha256: str | None = None) -> Path:
    """The direct file (torchvision's own, or a project's release), from the cache or downloaded, verified
    against the hash in its name or ``sha256``; a URL with neither is not downloaded."""
    name = url.rsplit("/", 1)[-1]
    target = settings.cache_dir() / "downloads" / name
    prefix = torchvision_hash_prefix(name) or sha256
    if prefix is None:
        raise Unreachable(f"no SHA-256 is known for {url}")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as file:
                shutil.copyfileobj(response, file)
        except (urllib.error.URLError, OSError) as err:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"{type(err).__name__}: {err}") from err
        partial.replace(target)
    if prefix:
        verify(target, prefix, f"The torchvision file {target}")
    return target


def download(arch_name: str, source: str, hub: HubWeights) -> Path:
    """A verified local copy of the ``source`` weights of ``arch_name``: hub first, torchvision second."""
    try:
        return from_hub(hub)
    except Unreachable:
        pass
    if hub.torchvision_url:
        try:
            return from_torchvision(hub.torchvision_url, hub.url_sha256)
        except Unreachable:
            pass
    raise WeightsError(offline_message(arch_name, source, hub))


def offline_message(arch_name: str, source: str, hub: HubWeights) -> str:
    """One sentence: which file to fetch by hand, the command that converts it, and the way around it."""
    alternative = f" (or {hub.torchvision_url})" if hub.torchvision_url else ""
    where = f"{hub_url(hub)}{alternative}" if hub.repo_id else str(hub.torchvision_url)
    return (
        f"The {source} weights of {arch_name} are not cached and cannot be downloaded (offline?); download "
        f"{where} on a machine with internet, run `ttlx weights convert {arch_name} "
        f"FILE --source {source}` here, or start from `--pretrained random`."
    )
