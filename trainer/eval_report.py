"""metrics.json and the Markdown table of ``evaluate``; the paper's rows for ``--compare paper``.

``PAPER_ROWS`` holds the paper's Tables 1 and 2 (ManiVideo, arXiv 2412.16212), copied from
``shared/paper_tables.md``. The paper computes its metrics "only for the hand-object areas"
(§4.2), so they sit beside our ``*_region`` figures. Its MPJPE is the L2 distance of 21 predicted
hand joints to the ground truth with units the paper does not state; ours is a 2D MediaPipe
error in pixels, so the two are shown apart and never compared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _row(fid, lpips, psnr, ssim, mpjpe):
    return {"fid_region": fid, "lpips_region": lpips, "psnr_region": psnr, "ssim_region": ssim, "mpjpe_paper": mpjpe}


PAPER_ROWS: dict[str, dict[str, float]] = {
    "Table 1, DexYCB: HOGAN": _row(64.74, 0.102, 29.50, 0.896, 60.95),
    "Table 1, DexYCB: Affordance Diffusion": _row(53.95, 0.093, 29.96, 0.903, 59.12),
    "Table 1, DexYCB: ControlNet + SD1.5": _row(84.74, 0.127, 28.27, 0.835, 68.01),
    "Table 1, DexYCB: ManiVideo": _row(49.96, 0.079, 30.10, 0.913, 57.30),
    "Table 1, authors' bimanual data: Affordance Diffusion": _row(39.91, 0.127, 29.17, 0.898, 37.45),
    "Table 1, authors' bimanual data: ControlNet + SD1.5": _row(45.50, 0.133, 28.33, 0.883, 42.89),
    "Table 1, authors' bimanual data: ManiVideo": _row(37.70, 0.113, 29.59, 0.905, 32.89),
    "Table 2: w/o Objaverse (configs/no_objaverse.yaml)": _row(61.60, 0.121, 27.99, 0.895, 37.33),
    "Table 2: w/o MLO, depth only (configs/no_mlo.yaml)": _row(46.67, 0.115, 28.26, 0.869, 39.41),
    "Table 2: MLO in the noise only (configs/mlo_noise_only.yaml)": _row(40.60, 0.117, 28.30, 0.881, 34.02),
    "Table 2: full model (configs/full.yaml)": _row(37.70, 0.113, 29.59, 0.905, 32.89),
}
PAPER_SOURCE = "ManiVideo (CVPR 2025, arXiv 2412.16212), Tables 1 and 2; metrics on the hand-object areas"

# (key stem, label, better) for the table; each has _full and _region variants (hand metrics: one value)
ROWS = (("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"), ("fid", "FID ↓"), ("fvd", "FVD ↓"))
HAND_ROWS = (("hand_mpjpe_gen_vs_joints_px", "hand 2D MPJPE vs stored joints (px) ↓"),
             ("hand_detection_gen_vs_joints", "hand detection rate (generated) ↑"),
             ("hand_mpjpe_truth_vs_joints_px", "detector's own error on real frames (px)"),
             ("hand_mpjpe_gen_vs_truth_px", "hand keypoints generated vs real frames (px) ↓"))


def _mean(values) -> float:
    v = [x for x in values if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def aggregate(records: list[dict], agg: dict) -> dict:
    """Means of the per-clip metrics (PSNR averaged in dB over clips with a finite value) + set metrics."""
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float)) and k not in ("index", "frames")})
    out = {k: _mean(r.get(k) for r in records) for k in keys}
    # identical clips have infinite PSNR: report inf when every clip is exact
    for k in ("psnr_full", "psnr_region"):
        vals = [r.get(k) for r in records if r.get(k) is not None]
        if vals and all(math.isinf(v) for v in vals):
            out[k] = math.inf
    out.update(agg)
    return out


def markdown(metrics: dict, missing: dict, n_clips: int, run: dict, worst: list[dict], compare: str | None) -> str:
    lines = [f"# evaluate: {n_clips} {run['split']} clips", "",
             f"checkpoint `{run['checkpoint']}` ({run['stage']}), {run['steps']} DDIM steps, guidance {run['guidance']}",
             ""]
    lines += ["| metric | ours: hand-object region | ours: full frame |", "|---|---|---|"]
    for key, label in ROWS:
        fam = "hands" if key.startswith("hand") else key
        reg, full = metrics.get(f"{key}_region"), metrics.get(f"{key}_full")
        if reg is None and full is None and fam in missing:
            reg = full = None
            cells = ["not computed", "not computed"]
        else:
            cells = [_fmt(reg), _fmt(full)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for key, label in HAND_ROWS:
        v = metrics.get(key)
        lines.append(f"| {label} | {'not computed' if v is None else _fmt(v)} | |")
    if missing:
        lines += ["", "Not computed:"] + [f"- {k}: {why}" for k, why in missing.items()]
    if compare == "paper":
        ours = {k: metrics.get(k) for k in ("fid_region", "lpips_region", "psnr_region", "ssim_region")}
        lines += ["", f"Paper: {PAPER_SOURCE}. MPJPE: the paper's (21 joints, units not stated), not comparable "
                  "with our 2D hand figures.", "",
                  "| row | FID ↓ | LPIPS ↓ | PSNR ↑ | SSIM ↑ | MPJPE ↓ |", "|---|---|---|---|---|---|",
                  "| **this run** | " + " | ".join(_fmt(v) for v in ours.values()) + " | — |"]
        lines += [f"| {name} | " + " | ".join(_fmt(float(v)) for v in row.values()) + " |"
                  for name, row in PAPER_ROWS.items()]
    if worst:
        lines += ["", "Worst clips (hand-object region PSNR):", "", "| clip | key | PSNR region | SSIM region |",
                  "|---|---|---|---|"]
        lines += [f"| {r['id']} | {r['key']} | {_fmt(r.get('psnr_region'))} | {_fmt(r.get('ssim_region'))} |"
                  for r in worst]
    return "\n".join(lines) + "\n"


def _json_safe(x):
    """nan -> null, inf -> "inf" (strict JSON), numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return None if math.isnan(x) else ("inf" if math.isinf(x) else x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_report(out: Path, run: dict, records: list[dict], agg: dict, nets, compare: str | None, log=print) -> dict:
    missing = dict(nets.missing)
    if nets.hands is not None and not any("hand_mpjpe_gen_vs_joints_px" in r for r in records):
        missing["hands"] = "no stored joints_2d in these stores (HOI stores only)"
    metrics = aggregate(records, agg)
    worst = sorted((r for r in records if math.isfinite(r.get("psnr_region", math.nan))),
                   key=lambda r: r["psnr_region"])[:5]
    random_init = any("random-init" in str(v) for v in nets.sources.values())
    report = {"metrics": metrics, "not_computed": missing, "clips": len(records), "run": run,
              "networks": nets.sources, "comparable_to_paper": not random_init,
              "region": "square box around the clip's hand-object mask (union of MLO layers), 10% margin",
              "paper": {"source": PAPER_SOURCE, "rows": PAPER_ROWS} if compare == "paper" else None}
    clean = _json_safe(report)
    (out / "metrics.json").write_text(json.dumps(clean, indent=2))
    table = markdown(metrics, missing, len(records), run, worst, compare)
    if random_init:
        table += "\nNetworks are RANDOMLY INITIALISED (test mode): FID / LPIPS / FVD values are not comparable.\n"
    (out / "metrics.md").write_text(table)
    log(table)
    log(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'clips.jsonl'}")
    return clean
