"""render-objaverse as a Job: list items on the driver, render each inside a worker.

Sources: ``objaverse`` (the real package; uids, LVIS filter, uid file, cache folder; each item's
locator is its object path, and a shard's objects download together, see ``objaverse_source``),
``objaverse-xl`` (the package's ``objaverse.xl`` API: annotations, per-source downloads;
selection by source, license, LVIS, identifier file), a local folder of meshes, or
``builtin`` (demo objects the project generates). Face-count limits (``--min-faces``,
``--max-faces``) are checked when an object is loaded (the annotations carry no face counts).
Items are an ``ItemTable`` (no Python object per item on the driver: 800K-10M objects).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from pipeline.assets.mesh_io import canonicalise, load_scene
from pipeline.engine.items import ItemTable, WorkItem
from pipeline.engine.runner import Job, auto_samples_per_shard
from pipeline.engine.shard_task import STEP_TIMINGS
from pipeline.errors import StepFailed, UserError
from pipeline.objaverse.sample import objaverse_layout, render_object, timed
from pipeline.objaverse.sources import builtin, local, objaverse_source, objaverse_xl
from pipeline.render.workers import worker_renderers
from schemas.config import RenderConfig
from schemas.storage import is_url

STEP = "pipeline.objaverse.job:objaverse_step"
NAMED_SOURCES = ("builtin", "objaverse", "objaverse-xl")


def list_items(source: str, limit: int | None = None, uids_file: str | None = None, lvis: list[str] | None = None,
               cache_dir: str | None = None, clips: int = 1, xl_sources: list[str] | None = None,
               licenses: list[str] | None = None, notes: list[str] | None = None,
               mirror: str | None = None) -> ItemTable:
    """Items of a source: ``objaverse``, ``objaverse-xl``, ``builtin`` or a folder path.
    ``notes``: a list that receives lines for the run summary; ``mirror``: see ``objaverse_source``."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    if (xl_sources or licenses) and source != "objaverse-xl":
        raise UserError("--xl-source and --license select from Objaverse-XL annotations: use --source objaverse-xl "
                        "(its sketchfab source holds the Objaverse 1.0 objects, with their licenses)")
    if source == "objaverse-xl":
        pairs, lines = objaverse_xl.list_objects(cache_dir, xl_sources, licenses, uids_file, lvis, limit)
        if notes is not None:
            notes.extend(lines)
        if not pairs:
            raise UserError("no Objaverse-XL object matches the selection (--xl-source, --license, --lvis, --uids)")
    elif source == "builtin":
        keys = builtin.builtin_uids()
        pairs = [(k, k) for k in (keys[:limit] if limit else keys)]
    elif source == "objaverse":
        pairs = objaverse_source.list_objects(cache_dir, lvis, uids_file, limit, mirror)
    else:
        pairs = local.list_meshes(source, limit)
    return ItemTable.from_pairs(pairs, clips)


def fetch_path(source: str, locator: str, cache_dir: str | None, mirror: str | None = None) -> Path:
    if source == "builtin":
        return builtin.write_builtin(locator, Path(tempfile.gettempdir()) / f"manivideo-builtin-{os.getuid()}")
    if source == "objaverse":
        return objaverse_source.fetch(locator, cache_dir, mirror)
    if source == "objaverse-xl":
        return objaverse_xl.fetch(locator, cache_dir)
    path = Path(locator)
    if not path.exists():
        raise StepFailed("fetch", f"file vanished: {path}")
    return path


def objaverse_step(item: WorkItem, options: dict) -> list[dict]:
    """Worker-side step: fetch, load, canonicalise, render all clips of one object. The first
    sample carries the item's seconds per stage (``STEP_TIMINGS``; the task moves them into
    the item's record in the shard marker)."""
    cfg = RenderConfig.from_dict(options["render"])
    timings: dict[str, float] = {}
    with timed(timings, "fetch"):
        path = fetch_path(options["source"], item.locator, options.get("cache_dir"), options.get("mirror"))
    with timed(timings, "load"):
        scene = load_scene(path, cfg.max_file_mb, cfg.max_faces, cfg.max_texture_px)
    with timed(timings, "normalise"):
        obj = canonicalise(item.key, scene, cfg.max_faces, cfg.normalise, cfg.min_faces)
    with timed(timings, "setup"):  # the worker's EGL context and renderers: once per process
        renderers = worker_renderers(cfg.resolution, cfg.yfov_deg, cfg.rgb_renderer)
    try:
        samples = render_object(obj, cfg, renderers, timings)
        if samples:
            samples[0][STEP_TIMINGS] = timings
        return samples
    except StepFailed:
        raise
    except Exception as e:  # noqa: BLE001  (GL errors etc. are this object's failure)
        text = str(e).strip().splitlines()
        raise StepFailed("render", "rendering failed", f"{type(e).__name__}: {text[0][:300] if text else ''}") from None


def build_job(source: str, out: Path | str, cfg: RenderConfig, limit: int | None = None, uids_file: str | None = None,
              lvis: list[str] | None = None, cache_dir: str | None = None, workers: int = 1,
              xl_sources: list[str] | None = None, licenses: list[str] | None = None,
              num_gpus_per_worker: float = 0.0, mirror: str | None = None) -> Job:
    """The job for a source. ``cfg.samples_per_shard == 0`` picks the shard size automatically.
    ``mirror`` (objaverse): download from there instead of Hugging Face; not part of the job's
    identity (a run resumed from another mirror makes the same store)."""
    notes: list[str] = []
    items = list_items(source, limit, uids_file, lvis, cache_dir, cfg.clips_per_object, xl_sources, licenses, notes,
                       mirror)
    if cfg.samples_per_shard == 0:
        total = int(items.n_samples.sum())
        size = max(auto_samples_per_shard(total, workers, out), cfg.clips_per_object)
        cfg = dataclasses.replace(cfg, samples_per_shard=size)
    src = source if source in NAMED_SOURCES else str(Path(source).resolve())
    options = {"source": "local" if src not in NAMED_SOURCES else src,
               "cache_dir": str(cache_dir) if cache_dir else None,
               # the per-object timeout does not change the output: not part of the job's identity
               "render": {k: v for k, v in cfg.to_dict().items() if k != "timeout_s"}}
    return Job(out=out if is_url(out) else Path(out), layout=objaverse_layout(cfg), items=items, step=STEP, options=options,
               title=f"render-objaverse ({src})", notes=notes, num_gpus_per_worker=num_gpus_per_worker,
               run_options={"mirror": mirror} if mirror else {})


def prepare_objects(items: list[WorkItem], options: dict) -> None:
    """Once per shard attempt, before its items (``shard_task``): start the downloads of the
    shard's objects that are not cached (Objaverse: in the background; Objaverse-XL: one call)."""
    locators = [i.locator for i in items]
    if options["source"] == "objaverse":
        objaverse_source.prefetch(locators, options.get("cache_dir"), options.get("mirror"))
    elif options["source"] == "objaverse-xl":
        objaverse_xl.prefetch(locators, options.get("cache_dir"))


objaverse_step.prepare = prepare_objects
