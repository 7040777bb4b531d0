"""render-human as a Job: videos listed on the driver, each turned into samples in a Ray worker.

One item = one video; it yields one sample per T-frame window (``clip.windows``), a number
the driver knows from the frame count (FFmpeg stream copy: no decoding). A video FFmpeg
cannot read is planned as one sample and recorded as a failure by its worker ("decode"); a
clip without a person fails with stage "keypoints". No rendering: workers need no GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.clips.crop import TooMuchPadding
from pipeline.engine.items import WorkItem
from pipeline.engine.runner import Job, auto_samples_per_shard
from pipeline.engine.shard_task import Skipped
from pipeline.errors import StepFailed, UserError
from pipeline.human import clip as human_clip
from pipeline.human.config import HumanConfig
from pipeline.human.crop import has_person
from pipeline.human.extract import ClipKeypoints, check_keypoint_sources, keypoint_source
from pipeline.human.video import (
    VideoSource,
    count_frames,
    find_videos,
    read_frames,
    read_intrinsics,
    read_masks,
)
from schemas import StoreLayout
from schemas.storage import is_url

STEP = "pipeline.human.job:render_human_item"


def human_layout(cfg: HumanConfig) -> StoreLayout:
    return StoreLayout(kind="human", frames=cfg.frames, resolution=cfg.resolution, layers=(),
                       samples_per_shard=cfg.samples_per_shard)


def _pick_reference(window: list[int], n_frames: int, frames: dict, kps: ClipKeypoints) -> int:
    for c in human_clip.reference_candidates(window, n_frames):
        if has_person(kps(c, frames[c])):
            return c
    raise StepFailed("reference", f"no frame away from the clip at frame {window[0]} shows the person")


def render_human_item(item: WorkItem, options: dict) -> list[dict]:
    """Worker-side step: every window of one video as contract samples."""
    cfg = HumanConfig.from_dict(options["human"])
    src = VideoSource.from_locator(item.key, item.locator)
    n = count_frames(src)
    wins = human_clip.windows(n, cfg)
    if len(wins) != item.n_samples:
        raise StepFailed("decode", f"video now gives {len(wins)} clips, {item.n_samples} were planned")
    cands = {w[0]: human_clip.reference_candidates(w, n) for w in wins}
    wanted = sorted({i for w in wins for i in w} | {c for cs in cands.values() for c in cs})
    frames = read_frames(src, wanted)
    masks = read_masks(src, wanted)
    K_cv = read_intrinsics(src)
    kps = ClipKeypoints(src, n)
    try:
        samples = []
        for w in wins:
            human_clip.require_person(w, [kps(i, frames[i]) for i in w], cfg)
            ref = _pick_reference(w, n, frames, kps)
            try:
                samples.append(human_clip.build_sample(w, frames, lambda i: kps(i, frames[i]), masks, ref, K_cv,
                                                       cfg, keypoint_source(src)))
            except TooMuchPadding as e:  # --max-padding: not written, counted in the summary
                samples.append(Skipped(e.reason))
        return samples
    finally:
        kps.close()


def list_items(root: Path, cfg: HumanConfig) -> tuple[list[WorkItem], list[str]]:
    """(items, notes): one item per video with at least one window; UserError on a bad root."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root} is not a folder")
    videos = find_videos(root)
    if not videos:
        raise UserError(f"no videos under {root}: expected <video>/images/*.png folders (TikTok layout) "
                        "or .mp4/.webm files")
    check_keypoint_sources(videos)
    items, short, unreadable = [], [], 0
    for v in videos:
        try:
            n_win = len(human_clip.windows(count_frames(v), cfg))
        except StepFailed:
            n_win, unreadable = 1, unreadable + 1  # the worker records why
        if n_win == 0:
            short.append(v.key)
            continue
        items.append(WorkItem(key=v.key, locator=v.to_locator(), n_samples=n_win))
    notes = []
    if short:
        notes.append(f"{len(short)} video(s) shorter than one clip of {cfg.frames} frames "
                     f"(stride {cfg.stride}) skipped, e.g. {short[0]}")
    if unreadable:
        notes.append(f"{unreadable} video(s) FFmpeg could not probe: planned as one clip each, "
                     "recorded as failed")
    if not items:
        raise UserError(f"no video under {root} is long enough for one clip of {cfg.frames} frames")
    return items, notes


def build_job(root: Path, out: Path | str, cfg: HumanConfig, workers: int = 1) -> Job:
    """The Job of ``render-human`` (UserError on a bad root or missing keypoint source)."""
    items, notes = list_items(Path(root), cfg)
    if cfg.samples_per_shard == 0:
        size = auto_samples_per_shard(sum(i.n_samples for i in items), workers, out, cap=8)
        cfg = dataclasses.replace(cfg, samples_per_shard=max(size, max(i.n_samples for i in items)))
    sources = sorted({keypoint_source(VideoSource.from_locator(i.key, i.locator)) for i in items})
    options = {"root": str(Path(root).resolve()),
               "human": {k: v for k, v in cfg.to_dict().items() if k != "timeout_s"}}
    return Job(out=out if is_url(out) else Path(out), layout=human_layout(cfg), items=items, step=STEP, options=options,
               title=f"render-human (keypoints: {', '.join(sources)})", notes=notes)
