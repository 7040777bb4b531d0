"""The trainer's sample index at Objaverse scale: time and memory per rank, before and after.

    python benchmarks/sample_index.py --samples 800000 10000000 [--dir /tmp/idx] [--skip-before-above 2000000]

For each N it writes a synthetic store (real Zarr metadata made by ``shard_writer.create_store``, 16
samples per shard, and N/16 shard markers shaped like render-objaverse's: 32-hex uids, per-stage
timings, per-sample quality attrs with 24 per-frame coverages; 1 item in 33 failed), then measures,
each in a fresh process (peak RSS over the process after its imports: ``VmHWM - VmRSS`` at start):

  * before  the reader as it was: every marker read, every record's row, key and attrs kept in Python
            lists, the split from the keys; and the bytes a DataLoader worker received (the pickled lists)
  * build   ``schemas.index.build`` + ``write``: once per run, on the driver, at the end of a run
  * rank    ``StoreReader(store, split="train")`` from the written index: what every training rank does,
            and the pickled reader every DataLoader worker receives

"before" above ``--skip-before-above`` samples is projected linearly from the smaller sizes (it needs
~17 GB at 10M). Prints one table; the load average is printed with it (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

S = 16


def rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_store(out: Path, n: int) -> None:
    """Synthetic store of ``n`` samples (one per item), markers written as render-objaverse does."""
    import numpy as np

    from pipeline.engine import shard_writer
    from schemas.store import StoreLayout

    layout = StoreLayout(kind="objaverse", frames=24, resolution=512, layers=("object",), samples_per_shard=S)
    n_shards = -(-n // S)
    shard_writer.create_store(out, layout, n_shards, {"title": "index benchmark", "nonce": "bench"})
    rng = np.random.default_rng(0)
    cov = ",".join(["0.1234"] * 24)
    timing = ('{"fetch": 0.0012, "load": 0.0041, "render_rgb": 0.1362, "references": 0.0913, '
              '"render_layers": 0.0671, "trajectory": 0.0082, "encode": 0.1263}')
    shards = out / "_shards"
    for k in range(n_shards):
        recs = []
        for r in range(k * S, min(n, (k + 1) * S)):
            uid = f"{int(rng.integers(2**63)):016x}{r:016x}"
            if r % 33 == 7:
                recs.append(f'{{"key": "{uid}", "rows": [{r}], "ok": false, "stage": "load", '
                            f'"reason": "unsupported file type", "detail": "x.fbx", "seconds": 0.01}}')
                continue
            attrs = (f'[{{"coverage_frames": [{cov}], "coverage_refs": [0.41,0.40,0.38,0.39,0.22,0.21], '
                     f'"faces": {1000 + r % 5000}, "textured": true, "outside_area": 0.0}}]')
            recs.append(f'{{"key": "{uid}", "rows": [{r}], "ok": true, "stage": null, "reason": null, '
                        f'"timings": {timing}, "attrs": {attrs}, "seconds": 0.4531}}')
        (shards / f"{k:07d}.json").write_text(f'{{"shard": {k}, "finished": 0, "flush_seconds": 0.007, '
                                              f'"items": [{", ".join(recs)}]}}')


def legacy_reader(path: Path, split: str = "train") -> dict:
    """The reader's marker scan before the index (schemas/reader.py at 042b955), kept here to measure it."""
    from schemas.split import held_out_keys

    rows, keys, attrs, failures = [], [], [], []
    shard_dir = path / "_shards"
    names = sorted(e.name for e in os.scandir(shard_dir) if e.name.endswith(".json"))
    for name in names:
        marker = json.loads((shard_dir / name).read_text())
        for rec in marker["items"]:
            if rec["ok"]:
                rows.extend(rec["rows"])
                keys.extend([rec["key"]] * len(rec["rows"]))
                attrs.extend(rec.get("attrs") or [{}] * len(rec["rows"]))
            else:
                failures.append(rec)
    test = held_out_keys(keys, 0.03)
    keep = [i for i, k in enumerate(keys) if (k in test) == (split == "test")]
    state = {"rows": [rows[i] for i in keep], "keys": [keys[i] for i in keep], "attrs": [attrs[i] for i in keep],
             "failures": failures}
    return {"samples": len(state["rows"]), "pickled_mb": len(pickle.dumps(state)) / 2**20}


def measure(what: str, store: str) -> dict:
    """One measurement in this process: seconds, peak and held RSS over the process after imports."""
    import gc

    import numpy as np  # noqa: F401

    from schemas import index as sample_index
    from schemas.reader import StoreReader

    base = rss_mb("VmRSS")
    t0 = time.perf_counter()
    if what == "before":
        extra = legacy_reader(Path(store))
    elif what == "build":
        idx = sample_index.build(store)
        meta = sample_index.write(store, idx, "bench")
        extra = {"samples": meta["samples"],
                 "index_mb": sum(v for k, v in sample_index.open_location(store).list("_index").items()) / 2**20}
    else:
        reader = StoreReader(store, split="train")
        extra = {"samples": len(reader), "pickled_mb": len(pickle.dumps(reader)) / 2**20}
    seconds = time.perf_counter() - t0
    gc.collect()
    return {"seconds": seconds, "peak_mb": rss_mb("VmHWM") - base, "held_mb": rss_mb("VmRSS") - base, **extra}


def run_child(what: str, store: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, str(store)], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, nargs="+", default=[800_000, 10_000_000])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/manivideo_index_bench"))
    ap.add_argument("--skip-before-above", type=int, default=2_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    ap.add_argument("--child", nargs=2, metavar=("WHAT", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    rows = []
    for n in args.samples:
        store = args.dir / f"s{n}.zarr"
        if not (store / "manifest.json").exists():
            t0 = time.perf_counter()
            shutil.rmtree(store, ignore_errors=True)
            store.parent.mkdir(parents=True, exist_ok=True)
            make_store(store, n)
            print(f"made {store} ({n} samples, {-(-n // S)} markers) in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        res = {"n": n}
        if n <= args.skip_before_above:
            res["before"] = run_child("before", store)
        res["build"] = run_child("build", store)
        res["rank"] = run_child("rank", store)
        rows.append(res)
        print(json.dumps(res), flush=True)
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
    measured = [r for r in rows if "before" in r]
    print(f"\nload average {os.getloadavg()[0]:.1f}; peak = VmHWM - RSS after imports, held = RSS after, per process")
    print(f"{'samples':>10} | {'before: s':>9} {'peak MB':>8} {'per worker MB':>13} | {'build: s':>8} {'peak MB':>8} "
          f"{'index MB':>8} | {'rank: s':>7} {'peak MB':>8} {'held MB':>8} {'per worker MB':>13}")
    for r in rows:
        if "before" in r:
            b = r["before"]
            before = f"{b['seconds']:>9.2f} {b['peak_mb']:>8.0f} {b['pickled_mb']:>13.1f}"
        elif measured:  # linear in N from the largest measured size
            m = measured[-1]
            f = r["n"] / m["n"]
            before = (f"{m['before']['seconds'] * f:>8.0f}* {m['before']['peak_mb'] * f:>7.0f}* "
                      f"{m['before']['pickled_mb'] * f:>12.0f}*")
        else:
            before = f"{'-':>9} {'-':>8} {'-':>13}"
        bu, rk = r["build"], r["rank"]
        print(f"{r['n']:>10} | {before} | {bu['seconds']:>8.2f} {bu['peak_mb']:>8.0f} {bu['index_mb']:>8.1f} | "
              f"{rk['seconds']:>7.2f} {rk['peak_mb']:>8.0f} {rk['held_mb']:>8.0f} {rk['pickled_mb']:>13.1f}")
    if any("before" not in r for r in rows) and measured:
        print("* projected linearly from the largest measured size (not run: it would not fit this machine)")


if __name__ == "__main__":
    main()
