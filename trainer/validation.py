"""Periodic validation during training: sample a few held-out (test split) clips, log their metrics.

At every ``val_every`` steps the first ``val_clips`` test samples (stage 1: their first frame;
stage 2: their first cfg.frames frames) (``schemas.split``; taken in turn
from each store that has test items) are sampled in one batch with the EMA weights when EMA is on,
in the training precision. Metrics (region / full-frame PSNR and SSIM, means over the clips) go to
``metrics.jsonl`` as ``{"step", "split": "test", "val/...": ...}`` and to TensorBoard under
``<stage>/val/``; the first clip's video and side-by-side are written under ``run/val/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from trainer.config import TrainConfig
from trainer.metrics import masked_psnr, masked_ssim


class Validator:
    def __init__(self, cfg: TrainConfig, stage: str, log=print):
        import dataclasses

        from trainer.data import MixedStores

        self.cfg, self.stage, self.picks, self.data = cfg, stage, [], None
        open_cfg = dataclasses.replace(cfg, use_objaverse=True, mix_objaverse=1.0, mix_hoi=1.0, mix_human=1.0)
        usable = []
        for path in cfg.stores:
            try:
                usable.append((path, MixedStores([path], open_cfg, frames=1, split="test").readers[0]))
            except UserError:
                continue  # a store without test items (e.g. a single item) is not validated on
        if not usable or cfg.val_clips == 0:
            log("validation: no store has test items; validation samples are skipped")
            return
        # stage 1: one frame per clip (the image model); stage 2: the trained window
        frames = 1 if stage == "stage1" else min([cfg.frames] + [r.layout.frames for _, r in usable])
        self.data = MixedStores([p for p, _ in usable], open_cfg, frames=frames, split="test")
        i = 0
        while len(self.picks) < cfg.val_clips and i < max(len(r) for r in self.data.readers):
            self.picks += [(s, i) for s, r in enumerate(self.data.readers) if i < len(r)]
            i += 1
        self.picks = self.picks[:cfg.val_clips]
        log(f"validation: {len(self.picks)} test clips of {frames} frames every {cfg.val_every} steps")

    def run(self, model, ema, params, step: int, device: torch.device, run_dir: Path, tb=None) -> dict | None:
        """Sample, score and log; returns the record written (None when there is nothing to validate)."""
        from trainer.inference import condition_images, sample_clips
        from trainer.sample import write_outputs

        if not self.picks:
            return None
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        try:
            items = [self.data.load(s, i, 0) for s, i in self.picks]
            out = sample_clips(model, items, self.cfg, device, self.cfg.sample_steps,
                               seeds=[self.cfg.seed + k for k in range(len(items))])
        finally:
            if ema is not None:
                ema.restore(params)
            model.train()
        per = {"psnr_region": [], "ssim_region": [], "psnr_full": [], "ssim_full": []}
        for v, t, m, ok in zip(out["video"], out["truth"], out["mask"], out["valid"], strict=True):
            v = torch.where(ok > 0, v, t)   # scored on the pixels the camera saw (the store's valid)
            per["psnr_region"].append(masked_psnr(v, t, m * ok))
            per["ssim_region"].append(masked_ssim(v, t, m * ok))
            per["psnr_full"].append(masked_psnr(v, t, ok))
            per["ssim_full"].append(masked_ssim(v, t, ok))
        rec = {"step": step, "split": "test", "val/clips": len(items)}
        rec.update({f"val/{k}": float(np.mean([x for x in vals if np.isfinite(x)] or [np.nan]))
                    for k, vals in per.items()})
        with open(run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if tb is not None:
            for k, v in rec.items():
                if k.startswith("val/") and np.isfinite(v):
                    tb.add_scalar(f"{self.stage}/{k}", v, step)
        hwc = lambda x: x.permute(0, 2, 3, 1).numpy()  # noqa: E731
        first = {"video": hwc(out["video"][0]), "truth": hwc(out["truth"][0]),
                 "conditions": hwc(condition_images(out["cond"], self.cfg)[0]),
                 "metrics": {k: v[0] for k, v in per.items()}}
        name = run_dir / "val" / f"{self.stage}_step{step:07d}"
        write_outputs(first, name.with_suffix(".mp4" if first["video"].shape[0] > 1 else ".png"))
        return rec
