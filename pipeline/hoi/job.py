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

from pipeline.clips.crop import TooMuchPadding
from pipeline.engine.items import WorkItem
from pipeline.engine.runner import Job, auto_samples_per_shard
from pipeline.engine.shard_task import Skipped
from pipeline.errors import StepFailed
from pipeline.hands.model import hand_models
from pipeline.hoi.adapter import make_selection
from pipeline.hoi.clip_sample import ObjectModel, build_sample, load_layer_object
from pipeline.hoi.datasets import get_adapter
from schemas import LAYER_NAMES, StoreLayout
from schemas.config import HoiConfig
from schemas.storage import is_url
from schemas.store import SAMPLE_ATTRS

STEP = "pipeline.hoi.job:render_hoi_item"


def hoi_layout(cfg: HoiConfig) -> StoreLayout:
    return StoreLayout(kind="hoi", frames=cfg.frames, resolution=cfg.resolution, layers=LAYER_NAMES,
                       samples_per_shard=cfg.samples_per_shard)


@functools.lru_cache(maxsize=4)
def _object_model(path: str, uid: str, cfg: HoiConfig) -> ObjectModel:
    from pipeline.render.workers import worker_renderers

    obj = load_layer_object(uid, path)
    return ObjectModel.build(obj, worker_renderers(cfg.resolution, cfg.ref_yfov_deg).rgb, cfg)


def render_hoi_item(item: WorkItem, options: dict) -> list[dict | Skipped]:
    """Worker-side step: all T-frame windows of one (sequence, camera) as contract samples; a window
    whose crop is more than ``max_padding`` padding is ``Skipped`` (no row, counted in the summary)."""
    from pipeline.render.workers import worker_renderers

    root = Path(options["root"])
    adapter = get_adapter(options["dataset"])
    cfg = resolve_config(HoiConfig.from_dict(options["hoi"]), adapter)
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
                obj = _object_model(str(clip.object_mesh), clip.object_uid or clip.object_mesh.parent.name, cfg)
            bg = background if clip.background is None else clip.background  # moving camera: the window's own
            sample = build_sample(clip, bg, models, obj, renderers.layers, cfg)
        except TooMuchPadding as e:  # --max-padding: this window is not written, the summary counts it
            samples.append(Skipped(e.reason))
            continue
        except StepFailed:
            raise
        except Exception as e:  # noqa: BLE001  (GL errors etc. are this item's failure)
            raise StepFailed("render", "rendering the clip failed",
                             f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None
        check_joint_agreement(sample.get(SAMPLE_ATTRS, {}), cfg, frame_ids)
        samples.append(sample)
    return samples


def resolve_config(cfg: HoiConfig, adapter) -> HoiConfig:
    """``cfg`` with ``fix_left_shapedirs`` None replaced by the adapter's own setting
    (``adapter.fix_left_shapedirs``, how the dataset was annotated; False if it says nothing)."""
    if cfg.fix_left_shapedirs is None:
        cfg = dataclasses.replace(cfg, fix_left_shapedirs=bool(getattr(adapter, "fix_left_shapedirs", False)))
    return cfg


def check_joint_agreement(attrs: dict, cfg: HoiConfig, frame_ids: list[int]) -> None:
    """``StepFailed("labels")`` when the window's worst joint error (``attrs`` from
    ``clip_sample.joint_agreement``) is over ``cfg.max_joint_error_mm``; no labels = no check."""
    worst = attrs.get("joint_err_max_mm")
    if worst is None or worst <= cfg.max_joint_error_mm:
        return
    why = ("wrong labels, or the stand-in hand is not MANO (real data needs --hand-model mano)?"
           if cfg.hand_model == "stand-in" else "wrong MANO files, left-hand shapedirs setting (now "
           f"{'fixed' if cfg.fix_left_shapedirs else 'as shipped'}) or labels?")
    raise StepFailed("labels", f"MANO joints disagree with the dataset's joint labels by {worst:.1f} mm "
                     f"(mean {attrs['joint_err_mean_mm']:.1f} mm; worst: {attrs['joint_err_worst']}, frames "
                     f"{frame_ids[0]}..{frame_ids[-1]}) > {cfg.max_joint_error_mm:g} mm: {why}")


def build_job(dataset: str, root: Path, out: Path | str, cfg: HoiConfig, selection: dict, mano_dir: str | None,
              num_gpus_per_worker: float = 0.0, workers: int = 1) -> Job:
    """The Job of ``render-hoi``: lists items (UserError on a bad root/selection) and checks the hand model.
    ``cfg.samples_per_shard == 0`` picks the shard size (HOI samples are big: at most 8)."""
    adapter = get_adapter(dataset)
    cfg = resolve_config(cfg, adapter)  # the resolved setting travels in the options (and the fingerprint)
    selection = make_selection(frames=cfg.frames, stride=cfg.stride, **selection)
    hand_models(cfg.hand_model, mano_dir, cfg.fix_left_shapedirs)  # fail early, on the driver
    adapter.skipped_windows = 0
    items = adapter.list_items(Path(root), selection)
    notes = []
    if adapter.skipped_windows:
        notes.append(f"{adapter.skipped_windows} window{'s' if adapter.skipped_windows != 1 else ''} skipped: fewer "
                     f"than {selection['min_valid_frames']:.0%} of frames with a hand (--min-valid-frames)")
    if cfg.samples_per_shard == 0 and items:
        size = auto_samples_per_shard(sum(i.n_samples for i in items), workers, out, cap=8)
        cfg = dataclasses.replace(cfg, samples_per_shard=max(size, max(i.n_samples for i in items)))
    options = {"dataset": dataset, "root": str(Path(root).resolve()),
               "mano_dir": str(Path(mano_dir).resolve()) if mano_dir else None, "selection": selection,
               "hoi": {k: v for k, v in cfg.to_dict().items() if k != "timeout_s"}}  # timeouts do not change output
    model_name = "stand-in hand (not MANO)" if cfg.hand_model == "stand-in" else "MANO"
    return Job(out=out if is_url(out) else Path(out), layout=hoi_layout(cfg), items=items, step=STEP, options=options,
               title=f"render-hoi {dataset} ({model_name})", num_gpus_per_worker=num_gpus_per_worker, notes=notes)
