"""render-hoi DATASET as a Job: items listed on the driver, each rendered inside a Ray worker.

Worker state kept between items (module-level caches): the EGL context and renderers
(``render.workers.worker_renderers``: one context, LayerRenderer, RGBRenderer), the hand
models, and the last few object models (loaded, canonicalised, reference views, points).
On a GPU node each worker asks Ray for ``num_gpus_per_worker`` and
``pipeline.render.egl.select_egl_device`` maps its CUDA device to the EGL device.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from pipeline.engine.runner import Job, auto_samples_per_shard
from pipeline.engine.shard_task import WorkItem
from pipeline.errors import StepFailed
from pipeline.hands.model import hand_models
from pipeline.hoi.clip_sample import ObjectModel, build_sample
from pipeline.hoi.datasets import get_adapter
from pipeline.mesh_io import load_object
from schemas import LAYER_NAMES, StoreLayout
from schemas.config import HoiConfig

STEP = "pipeline.hoi.job:render_hoi_item"


def hoi_layout(cfg: HoiConfig) -> StoreLayout:
    return StoreLayout(kind="hoi", frames=cfg.frames, resolution=cfg.resolution, layers=LAYER_NAMES,
                       samples_per_shard=cfg.samples_per_shard)


@functools.lru_cache(maxsize=4)
def _object_model(path: str, uid: str, cfg: HoiConfig) -> ObjectModel:
    from pipeline.render.workers import worker_renderers

    obj = load_object(uid, path, max_file_mb=512, max_faces=2_000_000, max_texture_px=2048)
    return ObjectModel.build(obj, worker_renderers(cfg.resolution, cfg.ref_yfov_deg).rgb, cfg)


def render_hoi_item(item: WorkItem, options: dict) -> list[dict]:
    """Worker-side step: all T-frame windows of one (sequence, camera) as contract samples."""
    from pipeline.render.workers import worker_renderers

    cfg = HoiConfig.from_dict(options["hoi"])
    root = Path(options["root"])
    adapter = get_adapter(options["dataset"])
    models = hand_models(cfg.hand_model, options.get("mano_dir"), cfg.fix_left_shapedirs)
    windows = adapter.windows(root, item, options["selection"])
    if len(windows) != item.n_samples:
        raise StepFailed("load", f"sequence now has {len(windows)} windows, {item.n_samples} were planned")
    renderers = worker_renderers(cfg.resolution, cfg.ref_yfov_deg)
    background = adapter.background(root, item)
    samples = []
    for frame_ids in windows:
        clip = adapter.load_clip(root, item, frame_ids, models)
        try:
            obj = None
            if clip.object_mesh is not None:
                obj = _object_model(str(clip.object_mesh), clip.extras.get("ycb_class", clip.object_mesh.parent.name), cfg)
            samples.append(build_sample(clip, background, models, obj, renderers.layers, cfg))
        except StepFailed:
            raise
        except Exception as e:  # noqa: BLE001  (GL errors etc. are this item's failure)
            raise StepFailed("render", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    return samples


def build_job(dataset: str, root: Path, out: Path, cfg: HoiConfig, selection: dict, mano_dir: str | None,
              num_gpus_per_worker: float = 0.0, workers: int = 1) -> Job:
    """The Job of ``render-hoi``: lists items (UserError on a bad root/selection) and checks the hand model.
    ``cfg.samples_per_shard == 0`` picks the shard size (HOI samples are big: at most 8)."""
    adapter = get_adapter(dataset)
    selection = {**selection, "frames": cfg.frames, "stride": cfg.stride}
    hand_models(cfg.hand_model, mano_dir, cfg.fix_left_shapedirs)  # fail early, on the driver
    items = adapter.list_items(Path(root), selection)
    if cfg.samples_per_shard == 0 and items:
        size = auto_samples_per_shard(sum(i.n_samples for i in items), workers, Path(out), cap=8)
        cfg = dataclasses.replace(cfg, samples_per_shard=max(size, max(i.n_samples for i in items)))
    options = {"dataset": dataset, "root": str(Path(root).resolve()),
               "mano_dir": str(Path(mano_dir).resolve()) if mano_dir else None, "selection": selection,
               "hoi": {k: v for k, v in cfg.to_dict().items() if k != "timeout_s"}}  # timeouts do not change output
    model_name = "stand-in hand (not MANO)" if cfg.hand_model == "stand-in" else "MANO"
    return Job(out=Path(out), layout=hoi_layout(cfg), items=items, step=STEP, options=options,
               title=f"render-hoi {dataset} ({model_name})", num_gpus_per_worker=num_gpus_per_worker)
