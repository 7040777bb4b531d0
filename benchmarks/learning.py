"""Does the trainer learn from its conditions? One command, on CPU, on stores it makes itself.

    python benchmarks/learning.py [--work out/learning] [--steps 800] [--seeds 3] [--jobs 2]

1. Stores, with the real commands, from the built-in demo data at 64 px (cached in --work):
   Objaverse builtin (several clips per object), the DexYCB and ARCTIC demo layouts
   (render-hoi, stand-in hands), the human demo (render-human).
2. Held-out probe set: the project's own split (schemas.split, 3 % by key hash; tiny stores hold
   out at least one item) — frames of every held-out sample of every store.
3. Training: stage 1 of the ``tiny`` preset, one run per (configuration, seed). The
   configurations are Table 2's rows, their ablation options read from ``configs/*.yaml``, plus
   the full model with the shared cross-attention (``cond_attention=shared``) to compare with the
   paper's separate one. Runs go ``--jobs`` at a time, one CPU thread each.
4. For every trained model, and for the untrained initialisation of the full model:
   - held-out diffusion loss at fixed (noise, t) pairs, low t [0, 333) and high t [667, 1000),
     beside the zero predictor's;
   - the same with conditions swapped between held-out items of the same source (MLO,
     references, points, all): the relative rise is how much the model uses them
     (trainer.condition_probe);
   - DDIM samples (25 steps, fixed seeds): PSNR / SSIM on the hand-object region (the union of
     the layers; the person for human items), beside a copy-the-reference baseline (per item,
     the reference image that scores best: an oracle pick, so a generous baseline). LPIPS only
     with local weights (--lpips-trunk/--lpips-lin), which cannot be downloaded here.
5. ``learning.json`` and ``samples.png`` (truth | reference baseline | untrained | each
   configuration) in --work, and a table on stdout.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

# Table 2 rows (and the attention comparison): name -> the config file whose ablation options apply
CONFIGS = {"full": "configs/full.yaml", "no_mlo": "configs/no_mlo.yaml",
           "mlo_noise_only": "configs/mlo_noise_only.yaml", "no_objaverse": "configs/no_objaverse.yaml",
           "full_shared_attention": "configs/full.yaml"}
EXTRA = {"full_shared_attention": {"cond_attention": "shared"}}
ABLATION_KEYS = ("mlo_mode", "use_objaverse", "cond_attention")
SWAP_NAMES = ("mlo", "refs", "points", "all")
R = 64


# --- 1. stores -----------------------------------------------------------------------------------

def make_stores(work: Path, log=print) -> list[str]:
    """The four demo stores at 64 px (commands run once; a finished set is reused)."""
    py = sys.executable
    stores = {k: work / f"{k}.zarr" for k in ("objaverse", "dexycb", "arctic", "human")}
    done = work / "stores.done"
    if done.exists() and all((p / "zarr.json").exists() for p in stores.values()):
        return [str(p) for p in stores.values()]
    cmds = [
        [py, "cli.py", "render-objaverse", "--source", "builtin", "--resolution", str(R), "--frames", "8",
         "--clips", "12", "--out", str(stores["objaverse"])],
        [py, "cli.py", "make-demo-hoi", "--layout", "dexycb", "--frames", "32", str(work / "demo_dexycb")],
        [py, "cli.py", "render-hoi", "dexycb", "--root", str(work / "demo_dexycb"), "--hand-model", "stand-in",
         "--resolution", str(R), "--frames", "8", "--out", str(stores["dexycb"])],
        [py, "cli.py", "make-demo-hoi", "--layout", "arctic", "--frames", "32", str(work / "demo_arctic")],
        [py, "cli.py", "render-hoi", "arctic", "--root", str(work / "demo_arctic"), "--hand-model", "stand-in",
         "--resolution", str(R), "--frames", "8", "--out", str(stores["arctic"])],
        [py, "cli.py", "make-demo-human", str(work / "demo_human")],
        [py, "cli.py", "render-human", "--root", str(work / "demo_human"), "--resolution", str(R), "--frames", "8",
         "--out", str(stores["human"])],
    ]
    env = {**os.environ, "PYOPENGL_PLATFORM": "egl"}
    for cmd in cmds:
        if "--out" in cmd:
            cmd += ["--overwrite", "--no-progress"]
        log("$ " + " ".join(cmd[1:]))
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"store command failed ({r.returncode}): {' '.join(cmd[1:])}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    done.write_text(json.dumps([c[1:] for c in cmds], indent=1))
    return [str(p) for p in stores.values()]


# --- 2. the held-out probe set --------------------------------------------------------------------

def probe_items(cfg, frames_per_sample: int = 2, max_per_store: int = 12):
    """Raw items (one frame each) of the held-out samples: [(item, source, sample id)], evenly over
    each store's test samples and frames."""
    from trainer.data import MixedStores

    ds = MixedStores(cfg.stores, dataclasses.replace(cfg, flip_p=0.0, color_jitter=0.0, ref_dropout=0.0),
                     frames=1, split="test")
    out = []
    for s, reader in enumerate(ds.readers):
        T = reader.layout.frames
        frames = np.linspace(0, T - 1, frames_per_sample).round().astype(int)
        # sample-major order with the frame alternating, so a cut keeps distinct samples and both frames
        picks = [(i, frames[(i + k) % len(frames)]) for k in range(len(frames)) for i in range(len(reader))]
        for i, f in picks[:max_per_store]:
            out.append((ds.load(s, i, int(f)), ds.store_source[s], f"{s}:{i}"))
    return out


# --- 3 + 4. one job: train, then measure ----------------------------------------------------------

def job_config(name: str, seed: int, stores: list[str], work: Path, steps: int, extra: list[str] = ()):
    """The tiny preset with configuration ``name``'s ablation options (from its configs/ file), then
    ``extra`` ("key=value", the benchmark's --set)."""
    from trainer.config import load_config

    spec = yaml.safe_load((ROOT / CONFIGS[name]).read_text())
    ablation = {k: spec[k] for k in ABLATION_KEYS if k in spec}
    ablation.update(EXTRA.get(name, {}))
    cfg = load_config("tiny", overrides={**ablation, "stores": stores, "seed": seed, "stage1_steps": steps,
                                         "run_dir": str(work / "runs" / f"{name}_s{seed}"), "ckpt_every": 0,
                                         "val_every": 0, "log_every": 50, "warmup_steps": 50})
    return load_config("tiny", overrides=list(extra), base=cfg.to_dict()) if extra else cfg


def measure(model, cfg, items, device, sample_n: int, sample_steps: int, lpips=None) -> dict:
    """Probe losses (own / swapped conditions / zero predictor) and sample metrics for one model."""
    from trainer.condition_probe import derangement, fixed_pairs, probe_losses, swappable
    from trainer.conditions import collate
    from trainer.inference import sample_clips
    from trainer.latents import latent_channels, latent_factor
    from trainer.metrics import masked_psnr, masked_ssim
    from trainer.train import make_scheduler

    raw = collate([it for it, _, _ in items])
    groups, samples = [g for _, g, _ in items], [s for _, _, s in items]
    perm = derangement(groups, samples)
    ok = swappable(perm)
    sched = make_scheduler(cfg)
    pairs = fixed_pairs(len(items), 1, latent_channels(cfg), R // latent_factor(cfg), cfg.num_train_timesteps)
    own = probe_losses(model, raw, pairs, sched, cfg, device)
    res = {"loss": {b: float(v.mean()) for b, v in own.items()},
           "loss_by_source": {b: {g: float(v[[x == g for x in groups]].mean()) for g in dict.fromkeys(groups)}
                              for b, v in own.items()}}
    res["swap_rise"] = {}
    for which in SWAP_NAMES:
        sw = probe_losses(model, raw, pairs, sched, cfg, device, perm=perm, which=which)
        res["swap_rise"][which] = {b: float(sw[b][ok].mean() / own[b][ok].mean() - 1) for b in own}
    # samples: the first sample_n items (stores interleaved), fixed seeds
    pick = _interleave(groups)[:sample_n]
    out = sample_clips(model, [items[i][0] for i in pick], cfg, device, steps=sample_steps,
                       seeds=[1000 + i for i in pick])
    video, truth, mask = out["video"][:, 0], out["truth"][:, 0], region(out["mask"][:, 0])
    ps = [masked_psnr(video[j], truth[j], mask[j]) for j in range(len(pick))]
    ss = [masked_ssim(video[j:j + 1], truth[j:j + 1], mask[j:j + 1]) for j in range(len(pick))]
    res["psnr_region"], res["ssim_region"] = float(np.mean(ps)), float(np.mean(ss))
    res["psnr_region_items"] = [float(p) for p in ps]
    if lpips is not None:
        res["lpips"] = float(np.mean([float(lpips(video[j:j + 1] * 2 - 1, truth[j:j + 1] * 2 - 1)) for j in range(len(pick))]))
    res["_video"] = (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return res


def region(mask):
    """[N, 1, R, R] {0, 1}: the hand-object mask (human items: the person mask); the whole frame where a
    sample has none (a human video stored without person masks)."""
    empty = mask.flatten(1).sum(1) == 0
    mask = mask.clone()
    mask[empty] = 1
    return mask


def _interleave(groups: list) -> list[int]:
    """Item indices taking the sources in turn (so a short sample set covers every source)."""
    by = {g: [i for i, x in enumerate(groups) if x == g] for g in dict.fromkeys(groups)}
    out = []
    while any(by.values()):
        for g in by:
            if by[g]:
                out.append(by[g].pop(0))
    return out


def run_job(name: str, seed: int, stores: list[str], work: str, steps: int, sample_n: int, sample_steps: int,
            lpips_paths: tuple | None, extra: list[str] = ()) -> dict:
    """In a worker process: train one configuration, then measure it (and the untrained model)."""
    import torch

    torch.set_num_threads(1)
    from trainer.checkpoint import load_checkpoint, load_model_weights
    from trainer.model import build_model
    from trainer.train import train

    work = Path(work)
    cfg = job_config(name, seed, stores, work, steps, extra)
    device = torch.device("cpu")
    lpips = _lpips(lpips_paths)
    items = probe_items(cfg)
    result = {"name": name, "seed": seed}
    if name == "full":  # the untrained initialisation: the same seed and build order as train()
        torch.manual_seed(seed)
        untrained = build_model(cfg)
        result["untrained"] = measure(untrained, cfg, items, device, sample_n, sample_steps, lpips)
        del untrained
    t0 = time.perf_counter()
    run = train(cfg, "stage1", log=lambda *a, **k: None)
    result["train_seconds"] = time.perf_counter() - t0
    result["train_loss_last50"] = float(np.mean(run["losses"][-50:]))
    torch.manual_seed(seed)
    model = build_model(cfg)
    load_model_weights(model, load_checkpoint(run["checkpoint"]))
    result["trained"] = measure(model, cfg, items, device, sample_n, sample_steps, lpips)
    return result


def _lpips(paths):
    if not paths:
        return None
    from trainer.metrics.lpips import LPIPS

    return LPIPS(trunk=paths[0], lin=paths[1])


# --- 5. report ------------------------------------------------------------------------------------

def baseline_copy_reference(items, sample_n) -> dict:
    """Copy-the-reference: per item, the reference image (object views, background / person) with the
    best region PSNR against the target — an oracle pick among the references."""
    import torch

    from trainer.conditions import collate, prepare_batch
    from trainer.metrics import masked_psnr, masked_ssim

    groups = [g for _, g, _ in items]
    pick = _interleave(groups)[:sample_n]
    cond = prepare_batch(collate([items[i][0] for i in pick]), resolution=R)
    truth, refs, mask = (cond["target"][:, 0] + 1) / 2, (cond["refs"] + 1) / 2, region(cond["mask"][:, 0])
    ps, ss, imgs = [], [], []
    for j in range(len(pick)):
        scores = [masked_psnr(refs[j, v], truth[j], mask[j]) if refs[j, v].abs().sum() > 0 else -math.inf
                  for v in range(refs.shape[1])]
        v = int(np.argmax(scores))
        ps.append(scores[v])
        ss.append(masked_ssim(refs[j, v:v + 1], truth[j:j + 1], mask[j:j + 1]))
        imgs.append(refs[j, v])
    video = torch.stack(imgs)
    return {"psnr_region": float(np.mean(ps)), "ssim_region": float(np.mean(ss)),
            "_video": (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8),
            "_truth": (truth.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8),
            "_labels": [f"{items[i][1]} {items[i][2]}" for i in pick]}


def mean_sd(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
            "values": [float(x) for x in v]}


def summarise(results: list[dict], base: dict, zero: dict, args, seconds: float, ae_psnr: float) -> dict:
    by = {}
    for r in results:
        by.setdefault(r["name"], []).append(r)
    full = by["full"]
    t = [r["trained"] for r in full]
    u = [r["untrained"] for r in full]
    out = {
        "ae_psnr_db": ae_psnr,
        "loss_trained": {b: mean_sd([x["loss"][b] for x in t]) for b in ("low", "high")},
        "loss_untrained": {b: mean_sd([x["loss"][b] for x in u]) for b in ("low", "high")},
        "loss_zero": zero,
        "swap_rise_all": {b: mean_sd([x["swap_rise"]["all"][b] for x in t]) for b in ("low", "high")},
        "swap_rise_mlo": {b: mean_sd([x["swap_rise"]["mlo"][b] for x in t]) for b in ("low", "high")},
        "swap_rise_refs": {b: mean_sd([x["swap_rise"]["refs"][b] for x in t]) for b in ("low", "high")},
        "swap_rise_points": {b: mean_sd([x["swap_rise"]["points"][b] for x in t]) for b in ("low", "high")},
        "swap_rise_untrained_all": {b: mean_sd([x["swap_rise"]["all"][b] for x in u]) for b in ("low", "high")},
        "psnr_trained": mean_sd([x["psnr_region"] for x in t]),
        "psnr_untrained": mean_sd([x["psnr_region"] for x in u]),
        "psnr_copy_reference": base["psnr_region"],
        "ssim_trained": mean_sd([x["ssim_region"] for x in t]),
        "ssim_untrained": mean_sd([x["ssim_region"] for x in u]),
        "ssim_copy_reference": base["ssim_region"],
        "lpips": ("not computed: LPIPS needs local weights (--lpips-trunk, --lpips-lin); none can be downloaded here"
                  if "lpips" not in t[0] else {"trained": mean_sd([x["lpips"] for x in t]),
                                                 "untrained": mean_sd([x["lpips"] for x in u])}),
        "ablations": {name: {
            "loss_high": mean_sd([r["trained"]["loss"]["high"] for r in rs]),
            "loss_low": mean_sd([r["trained"]["loss"]["low"] for r in rs]),
            "swap_rise_all_high": mean_sd([r["trained"]["swap_rise"]["all"]["high"] for r in rs]),
            "swap_rise_mlo_high": mean_sd([r["trained"]["swap_rise"]["mlo"]["high"] for r in rs]),
            "psnr_region": mean_sd([r["trained"]["psnr_region"] for r in rs]),
            "ssim_region": mean_sd([r["trained"]["ssim_region"] for r in rs]),
            "loss_high_by_source": {g: mean_sd([r["trained"]["loss_by_source"]["high"][g] for r in rs])
                                    for g in rs[0]["trained"]["loss_by_source"]["high"]},
            "train_seconds": mean_sd([r["train_seconds"] for r in rs])} for name, rs in by.items()},
        "settings": {"set": args.set, "steps": args.steps, "seeds": args.seeds, "jobs": args.jobs, "resolution": R,
                     "sample_steps": args.sample_steps, "sample_items": args.sample_n, "preset": "tiny",
                     "probe_pairs_per_item": 4},
        "seconds": seconds,
    }
    out["targets"] = {
        "ae_psnr_ge_28db": ae_psnr >= 28,
        "trained_below_untrained_and_zero": all(out["loss_trained"][b]["mean"] < min(out["loss_untrained"][b]["mean"],
                                                                                     zero[b]) for b in ("low", "high")),
        "swap_all_high_rise_ge_10pct": out["swap_rise_all"]["high"]["mean"] >= 0.10,
        "psnr_trained_above_untrained": out["psnr_trained"]["mean"] > out["psnr_untrained"]["mean"],
        "under_25_min": seconds <= 25 * 60,
    }
    return out


def table(s: dict) -> str:
    f = lambda d: f"{d['mean']:.4f} ± {d['sd']:.4f}"  # noqa: E731
    p = lambda d: f"{d['mean'] * 100:+.1f} % ± {d['sd'] * 100:.1f}"  # noqa: E731
    lines = ["", f"learning benchmark: {s['settings']['seeds']} seeds x {len(s['ablations'])} configurations, "
             f"{s['settings']['steps']} stage-1 steps each, {s['seconds'] / 60:.1f} min", "",
             f"latent round trip (held-out frames): {s['ae_psnr_db']:.1f} dB", "",
             "| held-out diffusion loss | low t | high t |", "|---|---|---|",
             f"| trained (full) | {f(s['loss_trained']['low'])} | {f(s['loss_trained']['high'])} |",
             f"| untrained | {f(s['loss_untrained']['low'])} | {f(s['loss_untrained']['high'])} |",
             f"| zero predictor | {s['loss_zero']['low']:.4f} | {s['loss_zero']['high']:.4f} |", "",
             "| conditions swapped (trained full) | low t | high t |", "|---|---|---|"]
    for k in ("mlo", "refs", "points", "all"):
        lines.append(f"| {k} | {p(s['swap_rise_' + k]['low'])} | {p(s['swap_rise_' + k]['high'])} |")
    lines.append(f"| all, untrained model | {p(s['swap_rise_untrained_all']['low'])} | "
                 f"{p(s['swap_rise_untrained_all']['high'])} |")
    lines += ["", "| samples (region) | PSNR dB | SSIM |", "|---|---|---|",
              f"| trained (full) | {s['psnr_trained']['mean']:.2f} ± {s['psnr_trained']['sd']:.2f} | "
              f"{s['ssim_trained']['mean']:.4f} |",
              f"| untrained | {s['psnr_untrained']['mean']:.2f} ± {s['psnr_untrained']['sd']:.2f} | "
              f"{s['ssim_untrained']['mean']:.4f} |",
              f"| copy the best reference (oracle pick) | {s['psnr_copy_reference']:.2f} | {s['ssim_copy_reference']:.4f} |",
              "", "| Table 2 in miniature | loss high t | swap all, high t | swap MLO, high t | PSNR region dB | SSIM region |",
              "|---|---|---|---|---|---|"]
    for name, a in s["ablations"].items():
        lines.append(f"| {name} | {f(a['loss_high'])} | {p(a['swap_rise_all_high'])} | {p(a['swap_rise_mlo_high'])} | "
                     f"{a['psnr_region']['mean']:.2f} ± {a['psnr_region']['sd']:.2f} | "
                     f"{a['ssim_region']['mean']:.4f} ± {a['ssim_region']['sd']:.4f} |")
    lines += ["", "targets: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in s["targets"].items())]
    return "\n".join(lines)


def contact_sheet(results: list[dict], base: dict, out: Path) -> Path:
    from PIL import Image

    from pipeline.inspection.preview import save_sheet

    first = {r["name"]: r for r in results if r["seed"] == min(x["seed"] for x in results)}
    cols = [("truth", base["_truth"]), ("copy reference", base["_video"]),
            ("untrained", first["full"]["untrained"]["_video"])]
    cols += [(name, r["trained"]["_video"]) for name, r in first.items()]
    rows = []
    for j, label in enumerate(base["_labels"]):
        rows.append([(Image.fromarray(imgs[j]).resize((96, 96), Image.Resampling.NEAREST),
                      (label if c == 0 else name)[:15]) for c, (name, imgs) in enumerate(cols)])
    title = "held-out items: " + " | ".join(name for name, _ in cols)
    return save_sheet([(title[:160], rows)], out)


def latent_roundtrip_psnr(items, cfg) -> float:
    """PSNR of decode(encode(x)) on the held-out frames (the tiny preset's pixel-patch latent)."""
    import torch

    from trainer.conditions import collate, prepare_batch
    from trainer.metrics import masked_psnr
    from trainer.model import build_model

    model = build_model(cfg)
    x = prepare_batch(collate([it for it, _, _ in items]), resolution=R)["target"][:, 0]
    with torch.no_grad():
        y = model.decode(model.encode(x))
    q = lambda a: ((a + 1) * 127.5).round().clamp(0, 255) / 255  # noqa: E731  (as stored: uint8)
    return float(masked_psnr(q(y), q(x)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="out/learning")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--sample-n", type=int, default=12)
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--lpips-trunk", default="")
    ap.add_argument("--lpips-lin", default="")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="trainer option for every run (as `train --set`), e.g. stage1_lr=5e-4")
    args = ap.parse_args()
    t0 = time.perf_counter()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    stores = make_stores(work)
    print(f"stores ready ({time.perf_counter() - t0:.0f} s): {stores}", flush=True)

    import torch

    from trainer.condition_probe import fixed_pairs, probe_losses
    from trainer.conditions import collate
    from trainer.latents import latent_channels, latent_factor
    from trainer.model import build_model
    from trainer.train import make_scheduler

    cfg0 = job_config("full", 0, stores, work, args.steps, args.set)
    items = probe_items(cfg0)
    print(f"held-out probe set: {len(items)} frames of "
          f"{len({s for _, _, s in items})} samples ({', '.join(sorted({g for _, g, _ in items}))})", flush=True)
    ae = latent_roundtrip_psnr(items, cfg0)
    base = baseline_copy_reference(items, args.sample_n)
    pairs = fixed_pairs(len(items), 1, latent_channels(cfg0), R // latent_factor(cfg0), cfg0.num_train_timesteps)
    zero_model = build_model(cfg0)
    zero = {b: float(v.mean()) for b, v in probe_losses(zero_model, collate([it for it, _, _ in items]), pairs,
                                                         make_scheduler(cfg0), cfg0, torch.device("cpu"),
                                                         zero=True).items()}
    del zero_model
    lp = (args.lpips_trunk, args.lpips_lin) if args.lpips_trunk and args.lpips_lin else None
    jobs = [(n, s) for s in range(args.seeds) for n in args.configs.split(",")]
    results = []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futs = {pool.submit(run_job, n, s, stores, str(work), args.steps, args.sample_n, args.sample_steps, lp,
                            args.set): (n, s)
                for n, s in jobs}
        for fut in cf.as_completed(futs):
            r = fut.result()
            results.append(r)
            tr = r["trained"]
            print(f"[{time.perf_counter() - t0:6.0f} s] {r['name']:>22} seed {r['seed']}: train {r['train_seconds']:.0f} s, "
                  f"loss low/high {tr['loss']['low']:.4f}/{tr['loss']['high']:.4f}, swap all high "
                  f"{tr['swap_rise']['all']['high'] * 100:+.1f} %, PSNR region {tr['psnr_region']:.2f} dB", flush=True)
    seconds = time.perf_counter() - t0
    summary = summarise(results, base, zero, args, seconds, ae)
    sheet = contact_sheet(results, base, work / "samples.png")
    summary["contact_sheet"] = str(sheet)
    clean = json.loads(json.dumps({"summary": summary, "runs": [_strip(r) for r in results]}, default=float))
    (work / "learning.json").write_text(json.dumps({**clean["summary"], "runs": clean["runs"]}, indent=1))
    print(table(summary))
    print(f"\nwrote {work / 'learning.json'} and {sheet}")


def _strip(r: dict) -> dict:
    """A run's result without the sample images."""
    if isinstance(r, dict):
        return {k: _strip(v) for k, v in r.items() if not k.startswith("_")}
    return r


if __name__ == "__main__":
    main()
