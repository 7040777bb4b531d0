"""The Objaverse source, through the real ``objaverse`` package (1.0 API).

The driver lists uids and their object paths from the package's metadata (its
``_load_object_paths``, the map behind ``load_uids`` and ``load_objects``; and
``load_lvis_annotations``). Each item carries its object path (``glbs/000-023/<uid>.glb``) as
locator, so no worker parses the 800K-entry map (1.1 s per parse, ~180 MB per worker).

A worker fetches objects into the cache folder in the package's layout, from the package's
URL (``HF_URL/<object path>``) or a mirror with the same layout (``--mirror``), a shard at a
time: ``prefetch`` (the step's ``prepare``) starts downloading the shard's objects, in order, in
one background thread, while the first ones render; ``fetch`` waits for its own object. The
download is ours (the same URL, a temp file, a rename): the package's ``load_objects([uid])``
re-parses the map on every call, and its ``_download_object`` globs every cached
``glbs/*/*.glb`` twice per object, O(N) on a shared cache (objaverse 0.1.7,
``objaverse/__init__.py``).

``cache_dir`` replaces the package's ``~/.objaverse/hf-objaverse-v1`` (the package keeps that
path in the module attribute ``_VERSIONED_PATH``, which is what we set). A cache that already
holds ``object-paths.json.gz`` (and the GLBs) works with no network at all.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pipeline.errors import StepFailed, UserError

HUB_HOST = "huggingface.co"
HF_URL = "https://huggingface.co/datasets/allenai/objaverse/resolve/main"  # objaverse/__init__.py, _download_object
DEFAULT_CACHE = Path.home() / ".objaverse" / "hf-objaverse-v1"
OBJECT_PATHS = "object-paths.json.gz"
LVIS = "lvis-annotations.json.gz"
DOWNLOAD_TIMEOUT_S = 120.0  # per connection attempt / read; the item's watchdog bounds the whole fetch


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


def _need_network(cache: Path, files: list[str], mirror: str | None = None) -> None:
    """Fill missing metadata from ``mirror``; without one, fail fast when the hub is unreachable
    (the package would then download the files itself)."""
    missing = [f for f in files if not (cache / f).exists()]
    if missing and mirror:
        for name in missing:
            try:
                download(f"{mirror.rstrip('/')}/{name}", cache / name)
            except Exception as e:  # noqa: BLE001
                raise UserError(f"cannot download {name} from --mirror {mirror}: {_text(e)}") from None
    elif missing and not hub_reachable():
        raise UserError(f"cannot reach the Objaverse hub ({HUB_HOST}) and {cache} has no cached {missing[0]}; "
                        "use --source DIR (local meshes) or --source builtin (demo objects), or --cache-dir "
                        "with a filled Objaverse cache")


def list_objects(cache_dir=None, lvis: list[str] | None = None, uids_file: str | None = None,
                 limit: int | None = None, mirror: str | None = None) -> list[tuple[str, str]]:
    """(uid, object path) sorted by uid, selected by LVIS categories and/or a file of uids (one
    per line), cut to ``limit``. The object path is relative to the cache folder."""
    import objaverse

    cache = use_cache_dir(cache_dir)
    _need_network(cache, [OBJECT_PATHS] + ([LVIS] if lvis else []), mirror)
    try:
        paths = objaverse._load_object_paths()  # what load_uids() and load_objects() read
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read Objaverse metadata in {cache}: {_text(e, 120)}") from None
    if uids_file:
        path = Path(uids_file)
        if not path.is_file():
            raise UserError(f"--uids file {path} does not exist")
        wanted = [u.strip().removesuffix(".glb") for u in path.read_text().splitlines() if u.strip()]
        unknown = [u for u in wanted if u not in paths]
        if unknown:
            raise UserError(f"{len(unknown)} uids in {path} are not in Objaverse (first: {unknown[0]})")
        selected = set(wanted)
    else:
        selected = paths.keys()
    if lvis:
        annotations = objaverse.load_lvis_annotations()
        bad = [c for c in lvis if c not in annotations]
        if bad:
            raise UserError(f"unknown LVIS category {bad[0]!r} (e.g. {', '.join(sorted(annotations)[:5])})")
        selected = set(selected) & {u for c in lvis for u in annotations[c]}
    uids = sorted(selected)
    return [(u, paths[u]) for u in (uids[:limit] if limit else uids)]


def list_uids(cache_dir=None, lvis: list[str] | None = None, uids_file: str | None = None,
              limit: int | None = None) -> list[str]:
    """The uids of ``list_objects``."""
    return [u for u, _ in list_objects(cache_dir, lvis, uids_file, limit)]


def download(url: str, dest: Path) -> Path:
    """``url`` (http(s):// or file://) into ``dest`` through a temp file and a rename, as the
    package does; a reader never sees a partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


@functools.cache
def _object_paths(cache: str) -> dict:
    import objaverse

    use_cache_dir(cache)
    return objaverse._load_object_paths()


def _relative(locator: str, cache: Path) -> str:
    """The object path of a locator: the path itself, or (a bare uid) looked up in the map,
    parsed once per worker."""
    if "/" in locator:
        return locator
    rel = _object_paths(str(cache)).get(locator.removesuffix(".glb"))
    if rel is None:
        raise StepFailed("fetch", "uid is not in the Objaverse object list")
    return rel


# worker state: downloads started by ``prefetch`` (object path -> Future), one thread
_pending: dict[str, Future] = {}
_pool: ThreadPoolExecutor | None = None


def prefetch(locators: list[str], cache_dir: str | None, mirror: str | None = None) -> None:
    """Start downloading, in order and in the background, the objects of ``locators`` that are
    not in the cache yet (the shard's objects; ``fetch`` waits for each)."""
    global _pool
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    base = (mirror or HF_URL).rstrip("/")
    for rel, fut in list(_pending.items()):
        if fut.done():
            _pending.pop(rel)
    for loc in locators:
        if "/" not in loc or loc in _pending or (cache / loc).exists():
            continue
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="objaverse-prefetch")
        _pending[loc] = _pool.submit(download, f"{base}/{loc}", cache / loc)


def fetch(locator: str, cache_dir: str | None, mirror: str | None = None) -> Path:
    """Local path of the object's GLB, downloading it (in this worker) if not cached."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    rel = _relative(locator, cache)
    started = _pending.pop(rel, None)
    if started is not None:
        try:
            started.result()
        except Exception:  # noqa: BLE001  (tried again just below; that error is the one recorded)
            pass
    dest = cache / rel
    if dest.exists():
        return dest
    url = f"{(mirror or HF_URL).rstrip('/')}/{rel}"
    try:
        return download(url, dest)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise StepFailed("fetch", "the object is missing at the Objaverse source", url) from None
        raise StepFailed("fetch", "objaverse download failed", f"HTTP {e.code} for {url}") from None
    except Exception as e:  # noqa: BLE001
        raise StepFailed("fetch", "objaverse download failed", _text(e)) from None


def _text(e: BaseException, limit: int = 300) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:limit] if lines else ''}"
