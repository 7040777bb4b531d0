"""The Objaverse source, through the real ``objaverse`` package (1.0 API).

The driver lists uids from the package's metadata (``load_uids``, ``load_lvis_annotations``);
each worker downloads only its own object (``load_objects([uid])``) into the cache folder.
``cache_dir`` replaces the package's ``~/.objaverse/hf-objaverse-v1`` (the package keeps
that path in the module attribute ``_VERSIONED_PATH``, which is what we set). A cache that
already holds ``object-paths.json.gz`` (and the GLBs) works with no network at all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pipeline.errors import StepFailed, UserError

HUB_HOST = "huggingface.co"
DEFAULT_CACHE = Path.home() / ".objaverse" / "hf-objaverse-v1"


def use_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    import objaverse

    path = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    objaverse._VERSIONED_PATH = str(path)
    objaverse.BASE_PATH = str(path.parent)
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _need_network(cache: Path, files: list[str]) -> None:
    missing = [f for f in files if not (cache / f).exists()]
    if missing and not hub_reachable():
        raise UserError(f"cannot reach the Objaverse hub ({HUB_HOST}) and {cache} has no cached {missing[0]}; "
                        "use --source DIR (local meshes) or --source builtin (demo objects), or --cache-dir "
                        "with a filled Objaverse cache")


def list_uids(cache_dir=None, lvis: list[str] | None = None, uids_file: str | None = None,
              limit: int | None = None) -> list[str]:
    """Sorted uids selected by LVIS categories and/or a file of uids (one per line), cut to ``limit``."""
    import objaverse

    cache = use_cache_dir(cache_dir)
    _need_network(cache, ["object-paths.json.gz"] + (["lvis-annotations.json.gz"] if lvis else []))
    try:
        known = set(objaverse.load_uids())
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read Objaverse metadata in {cache}: {str(e).splitlines()[0][:120]}") from None
    if uids_file:
        path = Path(uids_file)
        if not path.is_file():
            raise UserError(f"--uids file {path} does not exist")
        wanted = [u.strip().removesuffix(".glb") for u in path.read_text().splitlines() if u.strip()]
        unknown = [u for u in wanted if u not in known]
        if unknown:
            raise UserError(f"{len(unknown)} uids in {path} are not in Objaverse (first: {unknown[0]})")
        selected = set(wanted)
    else:
        selected = known
    if lvis:
        annotations = objaverse.load_lvis_annotations()
        bad = [c for c in lvis if c not in annotations]
        if bad:
            raise UserError(f"unknown LVIS category {bad[0]!r} (e.g. {', '.join(sorted(annotations)[:5])})")
        in_cats = {u for c in lvis for u in annotations[c]}
        selected &= in_cats
    uids = sorted(selected)
    return uids[:limit] if limit else uids


def fetch(uid: str, cache_dir: str | None) -> Path:
    """Local path of the object's GLB, downloading it (in this worker) if not cached."""
    import objaverse

    use_cache_dir(cache_dir)
    try:
        paths = objaverse.load_objects([uid])
    except Exception as e:  # noqa: BLE001
        text = str(e).strip().splitlines()
        raise StepFailed("fetch", "objaverse download failed",
                         f"{type(e).__name__}: {text[0][:300] if text else ''}") from None
    if uid not in paths:
        raise StepFailed("fetch", "uid is not in the Objaverse object list")
    return Path(paths[uid])
