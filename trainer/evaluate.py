"""``python cli.py evaluate``: generate every held-out clip of one or more stores and score it.

Output folder (``--out``)::

    run.json          what produced the results (checkpoint, stores, split, steps, guidance, seed);
                      a second run into the same folder must match it (that is what makes resume safe)
    clips/<id>.npz    per clip: video, truth (uint8 [F, R, R, 3]), mask, valid (uint8 [F, R, R]), box
    clips.jsonl       per-clip results, one JSON line per finished clip (find the worst clips here)
    metrics.json      aggregate metrics, what was not computed and why, the networks' weights
    metrics.md        the Markdown table (``--compare paper`` adds the paper's rows)

Resumable: a clip whose line is in clips.jsonl and whose npz exists is not generated again.
Per clip: PSNR / SSIM (region = the hand-object mask, full frame), LPIPS (region crop, full
frame), hand keypoint errors. Over all clips: FID (frame level: every frame of every clip) and
FVD (clip level) on the full frames and on the region crops (``trainer.metrics.region``).

Only pixels the camera saw are scored (the store's ``valid``; all of them for Objaverse): the
generated video's invalid pixels are first replaced by the truth's (black padding), so padding
adds no difference to any metric (LPIPS, FID and FVD see whole images; SSIM's window reaches
across the border), and PSNR / SSIM average over valid pixels only (region: mask and valid).
The npz keeps ``valid``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from schemas.storage import is_url
from trainer.metrics import masked_psnr, masked_ssim
from trainer.metrics.region import crop, region_box


def _u8(x: torch.Tensor) -> np.ndarray:
    """[F, 3, R, R] in [0, 1] -> uint8 [F, R, R, 3]."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _f(x: np.ndarray) -> torch.Tensor:
    """uint8 [F, R, R, 3] -> float [F, 3, R, R] in [0, 1]."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


def joints_on_valid_pixels(joints: np.ndarray, pixel_valid: np.ndarray | None) -> np.ndarray:
    """bool [F, 2]: every one of a hand's 21 joints (``joints`` [F, 2, 21, 2] pixels of a ``pixel_valid``
    [F, R, R] image, centres at +0.5) lies on a pixel from the camera image (all true without a mask)."""
    if pixel_valid is None:
        return np.ones(joints.shape[:2], bool)
    F_, R = pixel_valid.shape[0], pixel_valid.shape[-1]
    ij = np.floor(joints).astype(np.int64)
    inside = ((ij >= 0) & (ij < R)).all(axis=-1)                                   # [F, 2, 21]
    c = np.clip(ij, 0, R - 1)
    on = pixel_valid[np.arange(F_)[:, None, None], c[..., 1], c[..., 0]] > 0
    return (inside & on).all(axis=-1)


def _hand_errors(nets, video: np.ndarray, truth: np.ndarray, joints: np.ndarray | None, valid: np.ndarray | None,
                 scale: float, pixel_valid: np.ndarray | None = None) -> dict:
    """Detector on generated and true frames: errors against the stored joints_2d and between them;
    a hand with a joint off the camera image (``pixel_valid`` [F, R', R'] of the scored frames) is not scored."""
    from trainer.metrics.hands import match_errors, summarise

    if joints is None:
        return {}
    ref = joints * scale
    ok = valid & (joints >= 0).all(axis=(-1, -2)) & joints_on_valid_pixels(ref, pixel_valid)   # [F, 2]
    gen_err, true_err, pair_err = [], [], []
    for f in range(len(video)):
        det_gen, det_true = nets.hands(video[f]), nets.hands(truth[f])
        gen_err += match_errors(det_gen, ref[f], ok[f])
        true_err += match_errors(det_true, ref[f], ok[f])
        if det_true:  # keypoints found on the real frame: the generated frame's must agree
            pair_err += match_errors(det_gen, np.stack(det_true), np.ones(len(det_true), bool))
    out = {}
    for name, errs in (("gen_vs_joints", gen_err), ("truth_vs_joints", true_err), ("gen_vs_truth", pair_err)):
        s = summarise(errs)
        out[f"hand_mpjpe_{name}_px"], out[f"hand_detection_{name}"] = s["mpjpe_px"], s["detection_rate"]
    return out


def fill_invalid(video: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``video`` [F, 3, R, R] with the truth's pixels where ``valid`` [F, 1, R, R] is 0 (padding: nothing to
    compare), for the metrics that see whole images."""
    return video if valid is None else torch.where(valid > 0, video, truth)


def clip_metrics(video: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, nets, size: int,
                 valid: torch.Tensor | None = None) -> dict:
    """Per-clip metrics; video / truth [F, 3, R, R] in [0, 1], mask [F, 1, R, R], valid [F, 1, R, R]
    (1 = the truth's pixel comes from the camera image; None = all): scored on valid pixels only."""
    full = None if valid is None else (valid > 0).float()
    region = mask if valid is None else mask * full
    video = fill_invalid(video, truth, valid)   # SSIM's window next to padding sees no difference there
    m = {"psnr_region": masked_psnr(video, truth, region), "ssim_region": masked_ssim(video, truth, region),
         "psnr_full": masked_psnr(video, truth, full), "ssim_full": masked_ssim(video, truth, full)}
    if nets.lpips is not None:
        dev = next(nets.lpips.parameters()).device
        box = region_box(mask)
        m["lpips_full"] = float(nets.lpips(video.to(dev), truth.to(dev)).mean())
        m["lpips_region"] = float(nets.lpips(crop(video, box, size).to(dev), crop(truth, box, size).to(dev)).mean())
    return m


class Evaluation:
    """The evaluation of one checkpoint on the ``split`` of ``stores``, into ``out``."""

    def __init__(self, checkpoint: str, stores: list[str], out: str, split: str = "test", steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, batch: int = 4, limit: int | None = None,
                 device: str | None = None, log=print):
        from trainer.checkpoint import load_any
        from trainer.data import MixedStores

        self.dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.log, self.out, self.batch = log, Path(out), max(1, batch)
        if not stores:
            raise UserError("give at least one --store")
        if not Path(checkpoint).exists():
            raise UserError(f"checkpoint {checkpoint} does not exist")
        self.model, self.cfg, self.stage = load_any(checkpoint)
        self.model.to(self.dev).eval()
        self.steps = steps or self.cfg.sample_steps
        self.guidance = self.cfg.guidance_scale if guidance is None else guidance
        self.seed = seed
        open_cfg = dataclasses.replace(self.cfg, use_objaverse=True, mix_objaverse=1.0, mix_hoi=1.0, mix_human=1.0)
        from schemas.reader import StoreReader
        from trainer.data import open_stores

        self.data, kept = [], []
        for s in stores:
            full = open_stores([s])[0]  # one-line error for a missing / empty store
            # the split of the model's own config (test_fraction, split_by): the items it never trained on
            n = len(StoreReader(s, split=split, test_fraction=self.cfg.test_fraction, split_by=self.cfg.split_by))
            if n == 0:
                log(f"  {s}: no {split} clips (it has {len(full)} samples); skipped")
                continue
            self.data.append(MixedStores([s], open_cfg, frames=full.layout.frames, split=split))
            kept.append(s)
        stores = kept
        self.clips = [(k, i) for k, d in enumerate(self.data) for i in range(len(d.readers[0]))][:limit]
        self.run = {"checkpoint": str(Path(checkpoint).resolve()), "stores": [s if is_url(s) else str(Path(s).resolve()) for s in stores],
                    "split": split, "steps": self.steps, "guidance": self.guidance, "seed": seed, "stage": self.stage}

    def clip_id(self, k: int, i: int) -> str:
        return f"{k}_{Path(str(self.run['stores'][k]).rstrip('/').rpartition('/')[2]).stem}_{i:05d}"

    def _check_out(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "clips").mkdir(exist_ok=True)
        meta = self.out / "run.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            if old != self.run:
                diff = sorted(k for k in self.run if old.get(k) != self.run[k])
                raise UserError(f"{self.out} holds results of another evaluation (differs in {', '.join(diff)}); "
                                "use another --out")
        else:
            meta.write_text(json.dumps(self.run, indent=2))
        done = {}
        lines = self.out / "clips.jsonl"
        if lines.exists():
            text = lines.read_text()
            if text and not text.endswith("\n"):
                with open(lines, "a") as fh:  # end a torn last line, so the next record starts a line of its own
                    fh.write("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # blank, or the torn last line of a killed run: that clip is generated again
                if isinstance(rec, dict) and "id" in rec:
                    if (self.out / "clips" / f"{rec['id']}.npz").exists():
                        done[rec["id"]] = rec
        return done

    def generate(self, nets) -> list[dict]:
        """Generate (or reuse) every clip; returns the per-clip records in clip order."""
        from trainer.inference import sample_clips

        done = self._check_out()
        todo = [(k, i) for k, i in self.clips if self.clip_id(k, i) not in done]
        self.log(f"evaluate: {len(self.clips)} {self.run['split']} clips ({len(self.clips) - len(todo)} already done), "
                 f"{self.stage} model, {self.steps} DDIM steps, batch {self.batch}, device {self.dev}")
        t0, n_done = time.perf_counter(), 0
        for k in range(len(self.data)):
            mine = [i for kk, i in todo if kk == k]
            for j in range(0, len(mine), self.batch):
                idx = mine[j:j + self.batch]
                items = [self.data[k].load(0, i, 0) for i in idx]
                res = sample_clips(self.model, items, self.cfg, self.dev, self.steps, self.guidance,
                                   seeds=[self.seed + 1000 * k + i for i in idx])
                for b, i in enumerate(idx):
                    done[self.clip_id(k, i)] = self._finish(k, i, res["video"][b], res["truth"][b], res["mask"][b],
                                                            nets, res["valid"][b])
                n_done += len(idx)
                rate = n_done / (time.perf_counter() - t0)
                self.log(f"  {n_done}/{len(todo)} clips generated ({rate:.2f} clips/s)")
        return [done[self.clip_id(k, i)] for k, i in self.clips]

    def _finish(self, k: int, i: int, video, truth, mask, nets, valid=None) -> dict:
        reader = self.data[k].readers[0]
        cid = self.clip_id(k, i)
        rec = {"id": cid, "store": self.run["stores"][k], "index": i, "key": reader.key(i), "frames": int(video.shape[0])}
        rec.update(clip_metrics(video, truth, mask, nets, self.cfg.resolution, valid))
        if valid is not None:
            rec["valid_fraction"] = round(float((valid > 0).float().mean()), 4)
        v8, t8 = _u8(video), _u8(truth)
        if nets.hands is not None and "joints_2d" in reader.array_names:
            a = reader.read(i, names=["joints_2d", "hand_valid"])
            rec.update(_hand_errors(nets, v8, t8, a["joints_2d"], a["hand_valid"],
                                    self.cfg.resolution / reader.layout.resolution,
                                    None if valid is None else valid[:, 0].numpy()))
        ok = np.ones(mask[:, 0].shape, np.uint8) if valid is None else (valid[:, 0].numpy() > 0).astype(np.uint8)
        np.savez_compressed(self.out / "clips" / f"{cid}.npz", video=v8, truth=t8,
                            mask=(mask[:, 0].numpy() > 0).astype(np.uint8), box=np.array(region_box(mask)), valid=ok)
        with open(self.out / "clips.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        return rec


def set_metrics(out: Path, records: list[dict], nets, size: int, device) -> dict:
    """FID and FVD over all clips (full frame and region crops), from the saved clips."""
    from trainer.metrics.frechet import feature_distance

    res: dict = {}
    if nets.inception is None and nets.i3d is None:
        return res
    feats = {k: [] for k in ("fid_full_gen", "fid_full_true", "fid_region_gen", "fid_region_true")}
    vids = {k: [] for k in ("fvd_full_gen", "fvd_full_true", "fvd_region_gen", "fvd_region_true")}
    for rec in records:
        z = np.load(out / "clips" / f"{rec['id']}.npz")
        box = tuple(int(x) for x in z["box"])
        truth = _f(z["truth"])
        valid = torch.from_numpy(z["valid"]).float()[:, None] if "valid" in z.files else None
        for who, full in (("gen", fill_invalid(_f(z["video"]), truth, valid)), ("true", truth)):
            region = crop(full, box, size)
            if nets.inception is not None:
                feats[f"fid_full_{who}"].append(nets.inception(full.to(device)).cpu().numpy())
                feats[f"fid_region_{who}"].append(nets.inception(region.to(device)).cpu().numpy())
            if nets.i3d is not None:
                vids[f"fvd_full_{who}"].append(full)
                vids[f"fvd_region_{who}"].append(region)
    for part in ("full", "region"):
        if nets.inception is not None:
            a, b = np.concatenate(feats[f"fid_{part}_gen"]), np.concatenate(feats[f"fid_{part}_true"])
            res[f"fid_{part}"] = feature_distance(a, b) if len(a) >= 2 else math.nan
        if nets.i3d is not None:
            if len(records) >= 2:
                # one clip at a time: stores may differ in clip length
                gen = np.concatenate([nets.i3d(v[None]) for v in vids[f"fvd_{part}_gen"]])
                true = np.concatenate([nets.i3d(v[None]) for v in vids[f"fvd_{part}_true"]])
                res[f"fvd_{part}"] = feature_distance(gen, true)
            else:
                res[f"fvd_{part}"] = math.nan
    return res


def evaluate(checkpoint: str, stores: list[str], out: str, split: str = "test", steps: int | None = None,
             guidance: float | None = None, seed: int = 0, batch: int = 4, limit: int | None = None,
             inception=None, lpips_trunk=None, lpips_lin=None, i3d=None, hands: bool = True,
             random_init_networks: bool = False, compare: str | None = None, device: str | None = None,
             log=print) -> dict:
    """Run the whole evaluation; returns the metrics.json content."""
    from trainer.eval_report import write_report
    from trainer.metrics.networks import load_networks

    ev = Evaluation(checkpoint, stores, out, split, steps, guidance, seed, batch, limit, device, log)
    if not ev.clips:
        raise UserError(f"no {split} clips in {', '.join(stores)}")
    nets = load_networks(inception, lpips_trunk, lpips_lin, i3d, hands, random_init_networks, ev.dev)
    for name, why in nets.missing.items():
        log(f"  {name}: not computed ({why})")
    records = ev.generate(nets)
    log("computing FID / FVD over all clips ...")
    agg = set_metrics(ev.out, records, nets, ev.cfg.resolution, ev.dev)
    return write_report(ev.out, ev.run, records, agg, nets, compare, log)
