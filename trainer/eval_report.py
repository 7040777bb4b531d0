"""metrics.json and the Markdown table of ``evaluate``; the paper's rows for ``--compare paper``.

The paper's numbers (ManiVideo, arXiv 2412.16212, Table 1: comparison with other methods; Table 2:
ablations) could not be retrieved when this was written (no copy of the paper's tables was
reachable from the build environment), so ``PAPER_ROWS`` is empty and ``--compare paper`` says so
plainly instead of showing numbers nobody checked. Fill ``PAPER_ROWS`` from the paper as
``{"Table 1: ManiVideo (DexYCB)": {"psnr_region": ..., "fid_region": ...}, ...}`` with the metric keys
below; the table then shows them beside ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PAPER_ROWS: dict[str, dict[str, float]] = {}
PAPER_NOTE = ("paper numbers not included: the tables of arXiv 2412.16212 could not be retrieved here; "
              "add them to trainer/eval_report.py PAPER_ROWS from the paper")

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
    paper = PAPER_ROWS if compare == "paper" else {}
    head = "| metric | ours: hand-object region | ours: full frame |" + "".join(f" {p} |" for p in paper)
    lines += [head, "|" + "---|" * (3 + len(paper))]
    for key, label in ROWS:
        fam = "hands" if key.startswith("hand") else key
        reg, full = metrics.get(f"{key}_region"), metrics.get(f"{key}_full")
        if reg is None and full is None and fam in missing:
            reg = full = None
            cells = ["not computed", "not computed"]
        else:
            cells = [_fmt(reg), _fmt(full)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |" + "".join(f" {_fmt(p.get(key + '_region'))} |"
                                                                          for p in paper.values()))
    for key, label in HAND_ROWS:
        v = metrics.get(key)
        lines.append(f"| {label} | {'not computed' if v is None else _fmt(v)} | |" + " |" * len(paper))
    if missing:
        lines += ["", "Not computed:"] + [f"- {k}: {why}" for k, why in missing.items()]
    if compare == "paper" and not PAPER_ROWS:
        lines += ["", f"`--compare paper`: {PAPER_NOTE}."]
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
              "paper": PAPER_ROWS if compare == "paper" else None}
    if compare == "paper" and not PAPER_ROWS:
        report["paper_note"] = PAPER_NOTE
    clean = _json_safe(report)
    (out / "metrics.json").write_text(json.dumps(clean, indent=2))
    table = markdown(metrics, missing, len(records), run, worst, compare)
    if random_init:
        table += "\nNetworks are RANDOMLY INITIALISED (test mode): FID / LPIPS / FVD values are not comparable.\n"
    (out / "metrics.md").write_text(table)
    log(table)
    log(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'clips.jsonl'}")
    return clean
