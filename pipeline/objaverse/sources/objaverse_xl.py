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

An object already in that layout is used as is (no network). The GitHub downloader does
not return paths of repositories it finds already downloaded, so their files are located
from the identifier (``https://github.com/<org>/<repo>/blob/<commit>/<path>``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.errors import StepFailed, UserError
from pipeline.mesh_io import SUPPORTED_SUFFIXES
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


def fetch(locator: str, cache_dir: str | None) -> Path:
    """Local path of one XL object, downloading it in this worker if it is not cached."""
    import objaverse.xl as oxl
    import pandas as pd

    loc = json.loads(locator)
    cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
    if loc["source"] == "github" and (hit := _github_cached(cache, loc["id"])) is not None:
        return hit
    objects = pd.DataFrame([{"fileIdentifier": loc["id"], "source": loc["source"], "sha256": loc["sha256"]}])
    kwargs = {"save_repo_format": "files"} if loc["source"] == "github" else {}
    try:
        paths = oxl.download_objects(objects, download_dir=str(cache), processes=1, **kwargs)
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
