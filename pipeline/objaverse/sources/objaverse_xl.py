"""Objaverse-XL through the real ``objaverse.xl`` package.

The driver lists objects from the package's annotations (``downloaders[src].get_annotations``:
one parquet per source under the cache folder) and selects by source, license, file type,
LVIS category (Sketchfab objects are the Objaverse 1.0 uids) and an identifier file. Each
worker fetches only its own object with ``objaverse.xl.download_objects``, which keeps each
source's own layout under the cache folder (``--cache-dir``, default ``~/.objaverse``)::

    sketchfab/sketchfab.parquet          hf-objaverse-v1/object-paths.json.gz
                                         hf-objaverse-v1/glbs/<dir>/<uid>.glb
    smithsonian/smithsonian.parquet      smithsonian/objects/<uid of the URL>.glb
    thingiverse/thingiverse.parquet      thingiverse/thing-<thingId>-file-<fileId>.stl
    github/github.parquet                github/repos/<org>/<repo>/<path in the repo>

An object already in that layout is used as is (no network): its path follows from its
identifier (``cached``), one ``stat`` (Sketchfab: one per ``glbs/`` folder), instead of the
package's glob over every cached file of its source. The GitHub downloader does not return
paths of repositories it finds already downloaded, so their files are located from the
identifier (``https://github.com/<org>/<repo>/blob/<commit>/<path>``).

Downloads go a shard at a time: ``prefetch`` (the step's ``prepare``) makes one
``download_objects`` call for the shard's objects not in the cache. Each call of the package
re-reads its source's state (Sketchfab: parses the 800K-entry ``object-paths.json.gz``; every
source: globs its whole cache folder) and starts a process pool, so once per shard, not per
object. ``fetch`` then finds the file; an object the shard call missed is fetched alone (its
error recorded).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pipeline.assets.mesh_io import SUPPORTED_SUFFIXES
from pipeline.errors import StepFailed, UserError
from pipeline.objaverse.sources.objaverse_source import HUB_HOST, hub_reachable

SOURCES = ("sketchfab", "smithsonian", "thingiverse", "github")
ANNOTATIONS = {s: f"{s}/{s}.parquet" for s in SOURCES}
OBJECT_PATHS = "hf-objaverse-v1/object-paths.json.gz"
LVIS = "hf-objaverse-v1/lvis-annotations.json.gz"
DEFAULT_CACHE = Path.home() / ".objaverse"
UID = re.compile(r"^[0-9a-f]{32}$")


def _need(cache: Path, files: list[str]) -> None:
    missing = [f for f in files if not (cache / f).exists()]
    if missing and not hub_reachable():
        raise UserError(f"cannot reach the Objaverse-XL hub ({HUB_HOST}) and {cache} has no cached {missing[0]}; "
                        "use --source DIR (local meshes) or --source builtin (demo objects), or --cache-dir "
                        "with a filled Objaverse-XL cache")


def _identifier(line: str) -> str:
    """An XL fileIdentifier from a line of ``--uids``: the identifier itself, or an Objaverse 1.0
    uid (a Sketchfab object, with or without ``.glb``)."""
    s = line.strip().removesuffix(".glb")
    return f"https://sketchfab.com/3d-models/{s}" if UID.match(s) else line.strip()


def list_objects(cache_dir=None, sources: list[str] | None = None, licenses: list[str] | None = None,
                 ids_file: str | None = None, lvis: list[str] | None = None,
                 limit: int | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """((key, locator) per selected object, notes for the run summary), sorted by identifier.

    key = the XL ``fileIdentifier``; locator = JSON {"id", "source", "sha256"} (what a
    worker needs to fetch it). Objects whose file type the loader does not read are left
    out (counted in the notes).
    """
    import objaverse.xl as oxl
    import pandas as pd

    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
    chosen = list(dict.fromkeys(sources or SOURCES))
    bad = [s for s in chosen if s not in SOURCES]
    if bad:
        raise UserError(f"unknown --xl-source {bad[0]!r}; choose from {', '.join(SOURCES)}")
    _need(cache, [ANNOTATIONS[s] for s in chosen] + ([OBJECT_PATHS] if "sketchfab" in chosen else [])
          + ([LVIS] if lvis else []))
    try:
        df = pd.concat([oxl.downloaders[s].get_annotations(download_dir=str(cache)) for s in chosen],
                       ignore_index=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read Objaverse-XL annotations in {cache}: {str(e).splitlines()[0][:120]}") from None
    notes = []
    if licenses:
        known = set(df["license"].dropna().astype(str))
        unknown = [x for x in licenses if x not in known]
        if unknown:
            raise UserError(f"no object has --license {unknown[0]!r} (licenses here: {', '.join(sorted(known)[:6])})")
        df = df[df["license"].isin(licenses)]
    if ids_file:
        path = Path(ids_file)
        if not path.is_file():
            raise UserError(f"--uids file {path} does not exist")
        wanted = [_identifier(x) for x in path.read_text().splitlines() if x.strip()]
        unknown = sorted(set(wanted) - set(df["fileIdentifier"]))
        if unknown:
            raise UserError(f"{len(unknown)} identifiers in {path} are not in the selected Objaverse-XL "
                            f"annotations (first: {unknown[0]})")
        df = df[df["fileIdentifier"].isin(set(wanted))]
    if lvis:
        import objaverse

        from pipeline.objaverse.sources.objaverse_source import use_cache_dir

        use_cache_dir(cache / "hf-objaverse-v1")
        annotations = objaverse.load_lvis_annotations()
        bad = [c for c in lvis if c not in annotations]
        if bad:
            raise UserError(f"unknown LVIS category {bad[0]!r} (e.g. {', '.join(sorted(annotations)[:5])})")
        ids = {f"https://sketchfab.com/3d-models/{u}" for c in lvis for u in annotations[c]}
        df = df[df["fileIdentifier"].isin(ids)]
    types = df["fileType"].astype(str).str.lower().str.lstrip(".")
    readable = types.isin([s.lstrip(".") for s in SUPPORTED_SUFFIXES])
    if (~readable).any():
        counts = types[~readable].value_counts()
        notes.append(f"{int((~readable).sum())} selected objects are in file types the loader does not read "
                     f"({', '.join(f'{t} {n}' for t, n in counts.head(4).items())}); not rendered")
    df = df[readable].sort_values("fileIdentifier")
    rows = df[["fileIdentifier", "source", "sha256"]].itertuples(index=False)
    items = [(fid, json.dumps({"id": fid, "source": src, "sha256": sha})) for fid, src, sha in rows]
    return (items[:limit] if limit else items), notes


def _github_cached(cache: Path, file_identifier: str) -> Path | None:
    parts = file_identifier.split("/")
    if len(parts) < 8 or parts[2] != "github.com":
        return None
    path = cache / "github" / "repos" / parts[3] / parts[4] / "/".join(parts[7:])
    return path if path.is_file() else None


def cached(cache: Path, loc: dict) -> Path | None:
    """Where the package keeps an object of ``loc`` (``{"id", "source", "sha256"}``) under the
    cache folder, if it is there (paths as objaverse/xl/<source>.py writes them)."""
    from objaverse.utils import get_uid_from_str

    fid, src = loc["id"], loc["source"]
    if src == "github":
        return _github_cached(cache, fid)
    if src == "smithsonian":
        path = cache / "smithsonian" / "objects" / f"{get_uid_from_str(fid)}.glb"
    elif src == "thingiverse":  # thingiverse.py: get_thing_id_from_file_identifier / get_file_id_from_...
        try:
            thing, file_id = fid.split("/")[-2].split(":")[1], fid.split("fileId=")[-1]
        except IndexError:
            return None
        path = cache / "thingiverse" / f"thing-{thing}-file-{file_id}.stl"
    elif src == "sketchfab":  # hf-objaverse-v1/glbs/<dir>/<uid>.glb, <dir> from object-paths.json.gz
        glbs = cache / "hf-objaverse-v1" / "glbs"
        uid = fid.split("/")[-1]
        dirs = sorted(os.scandir(glbs), key=lambda e: e.name) if glbs.is_dir() else []
        return next((Path(d.path) / f"{uid}.glb" for d in dirs if (Path(d.path) / f"{uid}.glb").is_file()), None)
    else:
        return None
    return path if path.is_file() else None


def _download(cache: Path, locs: list[dict]) -> dict:
    """One ``objaverse.xl.download_objects`` call for ``locs``: fileIdentifier -> path."""
    import objaverse.xl as oxl
    import pandas as pd

    objects = pd.DataFrame([{"fileIdentifier": loc["id"], "source": loc["source"], "sha256": loc["sha256"]}
                            for loc in locs])
    kwargs = {"save_repo_format": "files"} if any(loc["source"] == "github" for loc in locs) else {}
    return oxl.download_objects(objects, download_dir=str(cache), processes=1, **kwargs)


def prefetch(locators: list[str], cache_dir: str | None) -> None:
    """Download the objects of a shard that are not in the cache, in one package call."""
    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
    missing = [loc for loc in map(json.loads, locators) if cached(cache, loc) is None]
    if missing:
        _download(cache, missing)


def fetch(locator: str, cache_dir: str | None) -> Path:
    """Local path of one XL object, downloading it in this worker if it is not cached."""
    loc = json.loads(locator)
    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
    if (hit := cached(cache, loc)) is not None:
        return hit
    try:
        paths = _download(cache, [loc])
    except Exception as e:  # noqa: BLE001
        text = str(e).strip().splitlines()
        raise StepFailed("fetch", f"{loc['source']} download failed",
                         f"{type(e).__name__}: {text[0][:300] if text else ''}") from None
    found = paths.get(loc["id"])
    if found is None and loc["source"] == "github":
        found = _github_cached(cache, loc["id"])
    if found is None or not Path(found).is_file():
        raise StepFailed("fetch", f"the object is missing at its source ({loc['source']})", loc["id"])
    return Path(found)
