"""The driver at Objaverse (800K objects) and Objaverse-XL (10M) scale, before and after, side by side.

    python benchmarks/driver_scale.py                          # everything (~15 min on 2 cores)
    python benchmarks/driver_scale.py --parts plan,resume --sizes 800000

Parts (each figure from its own child process, so peak RSS is that step's; a child whose RSS
passes --cap-gib is stopped and reported as "> cap"):

- plan:    synthetic Objaverse items (32-hex uid, object path ``glbs/000-NNN/<uid>.glb``, 1 clip)
           made into the job's items, then planned as ``run`` does before starting Ray: the
           duplicate-key check, the fingerprint, the shards, what to run. Before: a list of
           ``WorkItem`` and the old prelude of ``runner.run``; after: ``ItemTable`` and
           ``runner.plan_run``.
- resume:  the same, on an existing store whose first half of shards have markers (listing the
           markers, checking the manifest), and the end of a run (failures.jsonl rebuilt from
           all markers, size on disk).
- driver:  driver overhead per finished shard with 64 and 512 simulated workers: shard tasks are
           calls to one async Ray actor that writes each shard's journal (16 items, start/end/
           flushed lines as a real task writes them) and holds the call until a release clock
           frees it at --rate shards/s; the driver keeps 2 x workers in flight, shows progress
           and counts results. Before: the old loop (one task per turn, every in-flight journal
           re-read per turn, ``list.pop(0)``); after: ``driver.ShardScheduler``.
- fetch:   seconds to get the local path of a cached Objaverse object with an 800K-entry
           object-paths.json.gz: ``objaverse.load_objects([uid])`` (before) and
           ``objaverse_source.fetch(object path)`` (after); and one ``glob`` of a cache holding
           --glbs files (the package's ``_download_object`` does two per download).

"Before" is the code at --baseline-rev (default 042b955, before this work), extracted with
``git archive`` into a temporary folder and imported from there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "042b955"
ITEMS_PER_SHARD = 16


# ---------------------------------------------------------------- synthetic inputs (either tree)

def synthetic_pairs(n: int, start: int = 0):
    """(uid, object path) of n synthetic Objaverse objects (deterministic, sorted by uid)."""
    for i in range(start, start + n):
        uid = f"{i:032x}"
        yield uid, f"glbs/{i // 5000 // 1000:03d}-{i // 5000 % 1000:03d}/{uid}.glb"


def synthetic_table(n: int):
    """The same items as an ``ItemTable``, built column-wise with numpy (no string per item)."""
    import numpy as np

    from pipeline.engine.items import ItemTable, StringColumn

    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    idx = np.arange(n, dtype=np.uint64)
    uid = np.empty((n, 32), np.uint8)
    for j in range(32):  # hex digits of i, most significant first
        uid[:, 31 - j] = digits[((idx >> np.uint64(4 * j)) & np.uint64(15)).astype(np.int64)] if j < 16 else ord("0")
    folder = (np.arange(n) // 5000).astype(np.int64)
    loc = np.empty((n, 49), np.uint8)
    loc[:, :5] = np.frombuffer(b"glbs/", np.uint8)
    for j, (div, mod) in enumerate(((10**5, 10), (10**4, 10), (10**3, 10))):
        loc[:, 5 + j] = ord("0") + folder // div % mod
    loc[:, 8] = ord("-")
    for j, div in enumerate((100, 10, 1)):
        loc[:, 9 + j] = ord("0") + folder % 1000 // div % 10
    loc[:, 12] = ord("/")
    loc[:, 13:45] = uid
    loc[:, 45:] = np.frombuffer(b".glb", np.uint8)
    keys = StringColumn(uid.tobytes(), np.arange(n + 1, dtype=np.int64) * 32)
    del uid
    locs = StringColumn(loc.tobytes(), np.arange(n + 1, dtype=np.int64) * 49)
    del loc
    return ItemTable(keys, locs, np.ones(n, np.int32))


def layout():
    from pipeline.objaverse.sample import objaverse_layout
    from schemas.config import RenderConfig

    return objaverse_layout(RenderConfig(samples_per_shard=ITEMS_PER_SHARD).validate())


def marker(k: int) -> dict:
    """A realistic marker of shard k (16 items, one failed), as a shard task writes it."""
    items = []
    for j in range(ITEMS_PER_SHARD):
        i = k * ITEMS_PER_SHARD + j
        timings = {s: 0.1 for s in ("fetch", "load", "normalise", "setup", "references", "points", "trajectory",
                                    "render_layers", "render_rgb", "encode")}
        rec = {"key": f"{i:032x}", "rows": [i], "ok": j != 7, "stage": None, "reason": None, "timings": timings,
               "seconds": 1.0, "attrs": [{"coverage_refs": [0.3] * 6, "n_faces": 12345}]}
        if j == 7:
            rec.update(stage="load", reason="mesh has no triangles", detail="0 faces")
        items.append(rec)
    return {"shard": k, "finished": 0.0, "items": items, "flush_seconds": 0.01}


# ---------------------------------------------------------------- child measurements

def rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_plan(impl: str, n: int, out: str) -> dict:
    from pipeline.engine import runner, shard_writer
    from pipeline.engine.items import WorkItem

    lay = layout()
    t0 = time.perf_counter()
    if impl == "after":
        items = synthetic_table(n)
        base, t_items = rss_mib(), time.perf_counter() - t0
        job = runner.Job(out=Path(out), layout=lay, items=items, step="m:f", options={}, title="bench")
        t1 = time.perf_counter()
        rp = runner.plan_run(job)
        t_plan = time.perf_counter() - t1
        return {"items_s": t_items, "plan_s": t_plan, "shards": rp.n_shards, "todo": len(rp.todo),
                "rss_items_mib": base, "peak_rss_mib": rss_mib(), "resume": rp.resume}
    from collections import Counter

    items = [WorkItem(key=k, locator=loc, n_samples=1) for k, loc in synthetic_pairs(n)]
    base, t_items = rss_mib(), time.perf_counter() - t0
    job = runner.Job(out=Path(out), layout=lay, items=items, step="m:f", options={}, title="bench")
    t1 = time.perf_counter()
    # the prelude of runner.run at the baseline, line for line
    dup = [k for k, c in Counter(i.key for i in job.items).items() if c > 1]
    assert not dup
    n_samples = [i.n_samples for i in job.items]
    shards = shard_writer.plan_shards(n_samples, job.layout.samples_per_shard)
    resume = runner.check_out(job, False)  # fingerprints an existing store's job ...
    if not resume:
        job.fingerprint()  # ... or, for a new one, in runner.create (the manifest)
    done = shard_writer.completed_shards(Path(out)) if resume else set()
    todo = [k for k in range(len(shards)) if k not in done]
    skipped = sum(len(shards[k]) for k in done)
    t_plan = time.perf_counter() - t1
    return {"items_s": t_items, "plan_s": t_plan, "shards": len(shards), "todo": len(todo), "skipped": skipped,
            "rss_items_mib": base, "peak_rss_mib": rss_mib(), "resume": resume}


def child_end(impl: str, out: str) -> dict:
    from pipeline.engine import shard_writer

    t0 = time.perf_counter()
    names = shard_writer.completed_shards(Path(out))
    t_list = time.perf_counter() - t0
    t1 = time.perf_counter()
    failures = shard_writer.write_failures(Path(out))  # before: every record; after: (first 1000, counts)
    n_failures = len(failures) if isinstance(failures, list) else sum(failures[1].values())
    t_fail = time.perf_counter() - t1
    t2 = time.perf_counter()
    shard_writer.store_bytes(Path(out))
    t_bytes = time.perf_counter() - t2
    return {"markers": len(names), "list_s": t_list, "failures_s": t_fail, "failures": n_failures,
            "store_bytes_s": t_bytes, "peak_rss_mib": rss_mib()}


def sim_workers_class():
    import asyncio

    import ray

    @ray.remote(num_cpus=0, max_concurrency=4096)
    class SimWorkers:
        """Shard tasks without the work: write the shard's journal, wait to be released."""

        def __init__(self, out: str):
            self.out = Path(out)
            self.waiting: list = []
            self.released = 0

        async def run(self, k: int) -> dict:
            m = marker(k)
            lines = []
            for rec in m["items"]:
                lines.append("start " + json.dumps({"key": rec["key"], "t": 0.0, "pid": 1, "node": "n", "run": "r"}))
                lines.append("end " + json.dumps(rec))
            lines.append("flushed " + json.dumps({"keys": [r["key"] for r in m["items"] if r["ok"]]}))
            (self.out / "_shards" / f"{k:07d}.journal").write_text("\n".join(lines) + "\n")
            event = asyncio.Event()
            self.waiting.append(event)
            await event.wait()
            return m

        async def start(self, rate: float) -> None:
            asyncio.get_running_loop().create_task(self._release(rate))

        async def _release(self, rate: float) -> None:
            """Free the oldest waiting calls at ``rate`` per second; no catching up beyond 50 ms
            of releases when the driver was late in sending calls."""
            last, budget = time.monotonic(), 0.0
            while True:
                await asyncio.sleep(0.002)
                now = time.monotonic()
                budget = min(budget + (now - last) * rate, max(1.0, 0.05 * rate))
                last = now
                while budget >= 1 and self.waiting:
                    self.waiting.pop(0).set()
                    budget -= 1

        async def pending(self) -> int:
            return len(self.waiting)

    return SimWorkers


def child_driver(impl: str, workers: int, shards: int, rate: float, out: str) -> dict:
    import ray
    from tqdm import tqdm

    Path(out, "_shards").mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    sim = sim_workers_class().remote(out)
    window = 2 * workers
    total = shards + window  # the last window drains after the measured shards
    finished: list[tuple[float, float]] = []  # (wall, driver cpu) at each finished shard
    bar = tqdm(total=total * ITEMS_PER_SHARD, file=open(os.devnull, "w"), dynamic_ncols=True)

    def on_marker(k, m):
        bar.n += 0  # accounting as the runner does
        sum(1 for r in m["items"] if r["ok"])
        finished.append((time.perf_counter(), time.process_time()))

    def submit(k):
        return sim.run.remote(k)

    ray.get(sim.start.remote(rate))
    t0 = time.perf_counter()
    if impl == "after":
        import numpy as np

        from pipeline.engine import driver, shard_writer
        from pipeline.engine.shard_task import read_journal

        def show(live):
            bar.n = min(bar.total, len(finished) * ITEMS_PER_SHARD + live)
            bar.set_postfix(ok=len(finished), failed=0, refresh=False)
            bar.refresh()

        sched = driver.ShardScheduler(submit, window, Path(out), on_marker,
                                      lambda k: len(read_journal(shard_writer.journal_path(Path(out), k)).ended),
                                      progress=driver.JournalProgress(Path(out)), show=show)
        result = sched.run(np.arange(total))
        turns = result.turns
    else:
        from pipeline.engine.runner import _count_ended  # the baseline's

        pending: dict = {}
        queue = list(range(total))
        turns = 0
        while queue or pending:  # the loop of runner.run at the baseline, failure handling aside
            while queue and len(pending) < window:
                k = queue.pop(0)
                pending[submit(k)] = k
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            turns += 1
            for ref in ready:
                k = pending.pop(ref)
                on_marker(k, ray.get(ref))
            live = _count_ended(Path(out), list(pending.values()), made=True)
            bar.n = min(bar.total, len(finished) * ITEMS_PER_SHARD + live)
            bar.set_postfix(ok=len(finished), failed=0, refresh=False)
            bar.refresh()
    ray.shutdown()
    a, b = window // 2, min(len(finished), window // 2 + shards) - 1  # steady state: skip the start
    (w0, c0), (w1, c1) = finished[a], finished[b]
    return {"shards_s": (b - a) / (w1 - w0), "cpu_ms_per_shard": 1000 * (c1 - c0) / (b - a), "turns": turns,
            "finished": len(finished), "wall_s": time.perf_counter() - t0, "peak_rss_mib": rss_mib()}


def child_fetch(impl: str, cache: str, uid: str, rel: str) -> dict:
    times = []
    if impl == "before":
        import objaverse

        objaverse._VERSIONED_PATH = cache
        for _ in range(3):
            t0 = time.perf_counter()
            path = objaverse.load_objects([uid])[uid]
            times.append(time.perf_counter() - t0)
    else:
        from pipeline.objaverse.sources import objaverse_source

        for _ in range(3):
            t0 = time.perf_counter()
            path = str(objaverse_source.fetch(rel, cache))
            times.append(time.perf_counter() - t0)
    assert Path(path).is_file()
    return {"fetch_s": sorted(times)[1], "peak_rss_mib": rss_mib()}


CHILDREN = {"plan": child_plan, "end": child_end, "driver": child_driver, "fetch": child_fetch}


# ---------------------------------------------------------------- parent: trees, children, tables

def baseline_tree(rev: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="manivideo-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pipeline", "schemas"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_child(tree: Path, cap_gib: float, name: str, *args) -> dict:
    """Run one measurement in a child process importing from ``tree``; stop it past the RSS cap."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT / "benchmarks")])}
    code = (f"import json, sys; sys.path[:0] = [{str(tree)!r}]; import driver_scale as b; "
            f"print('RESULT ' + json.dumps(b.CHILDREN[{name!r}](*json.loads(sys.argv[1]))))")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(list(args))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(tree))
    peak, t0 = 0.0, time.perf_counter()
    while proc.poll() is None:
        try:
            rss = int(next(ln for ln in open(f"/proc/{proc.pid}/status") if ln.startswith("VmRSS")).split()[1]) / 2**20
        except (OSError, StopIteration):
            rss = 0.0
        peak = max(peak, rss)
        if rss > cap_gib:
            proc.kill()
            proc.wait()
            return {"over_cap": True, "stopped_after_s": time.perf_counter() - t0, "peak_rss_mib": rss * 1024}
        time.sleep(0.05)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name}{args}: exit {proc.returncode}: {err[-2000:]}")
    return json.loads(lines[-1][7:])


def make_store(tree: Path, n: int, folder: Path) -> Path:
    """A store for n synthetic items, made by ``runner.create`` (metadata only), with the markers of
    its first half of shards (realistic content) written."""
    out = folder / f"store-{n}.zarr"
    code = f"""
import json, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'benchmarks')!r}]
from pathlib import Path
import driver_scale as b
from pipeline.engine import runner, shard_writer
job = runner.Job(out=Path({str(out)!r}), layout=b.layout(), items=b.synthetic_table({n}), step="m:f", options={{}},
                 title="bench")
rp = runner.plan_run(job)
runner.create(job, rp)
for k in range(rp.n_shards // 2):
    shard_writer.marker_path(job.out, k).write_text(json.dumps(b.marker(k)))
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    return out


def fmt(r: dict, key: str, unit: str = "s", digits: int = 2) -> str:
    if r.get("over_cap"):
        return "-"
    return f"{r[key]:.{digits}f} {unit}".rstrip()


def capped(r: dict) -> str:
    return (f"  STOPPED: RSS passed the cap ({r['peak_rss_mib'] / 1024:.1f} GiB) after {r['stopped_after_s']:.0f} s"
            if r.get("over_cap") else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="plan,resume,driver,fetch")
    ap.add_argument("--sizes", default="800000,10000000")
    ap.add_argument("--workers", default="64,512")
    ap.add_argument("--shards", type=int, default=300, help="driver: finished shards measured per configuration")
    ap.add_argument("--rate", type=float, default=200.0, help="driver: shards/s the simulated workers finish")
    ap.add_argument("--glbs", type=int, default=20000, help="fetch: GLB files in the cache for the glob figure")
    ap.add_argument("--baseline-rev", default=BASELINE)
    ap.add_argument("--cap-gib", type=float, default=4.0)
    args = ap.parse_args()
    parts, sizes = args.parts.split(","), [int(x) for x in args.sizes.split(",")]
    trees = {"before": baseline_tree(args.baseline_rev), "after": ROOT}
    tmp = Path(tempfile.mkdtemp(prefix="driver-scale-"))
    print(f"load average at start: {os.getloadavg()}")
    rows = []
    if "plan" in parts:
        for n in sizes:
            for impl in ("before", "after"):
                r = run_child(trees[impl], args.cap_gib, "plan", impl, n, str(tmp / "none.zarr"))
                rows.append(("plan", n, impl, r))
                print(f"plan   {n:>9} {impl:6}  items {fmt(r, 'items_s')}  plan {fmt(r, 'plan_s')}  "
                      f"peak RSS {fmt(r, 'peak_rss_mib', 'MiB', 0)}{capped(r)}", flush=True)
    if "resume" in parts:
        for n in sizes:
            store = make_store(trees["after"], n, tmp)
            for impl in ("before", "after"):
                r = run_child(trees[impl], args.cap_gib, "plan", impl, n, str(store))
                rows.append(("resume-plan", n, impl, r))
                print(f"resume {n:>9} {impl:6}  plan {fmt(r, 'plan_s')} (todo {r.get('todo')})  "
                      f"peak RSS {fmt(r, 'peak_rss_mib', 'MiB', 0)}{capped(r)}", flush=True)
                e = run_child(trees[impl], args.cap_gib, "end", impl, str(store))
                rows.append(("end", n, impl, e))
                print(f"end    {n:>9} {impl:6}  list {fmt(e, 'list_s')}  failures.jsonl {fmt(e, 'failures_s')}  "
                      f"size {fmt(e, 'store_bytes_s')}  peak RSS {fmt(e, 'peak_rss_mib', 'MiB', 0)}{capped(e)}", flush=True)
            subprocess.run(["rm", "-rf", str(store)], check=True)
    if "driver" in parts:
        for w in [int(x) for x in args.workers.split(",")]:
            for impl in ("before", "after"):
                r = run_child(trees[impl], args.cap_gib, "driver", impl, w, args.shards, args.rate,
                              str(tmp / f"drv-{impl}-{w}.zarr"))
                rows.append(("driver", w, impl, r))
                print(f"driver {w:>4} workers {impl:6}  {fmt(r, 'cpu_ms_per_shard', 'ms', 2)} driver CPU per finished "
                      f"shard, {fmt(r, 'shards_s', 'shards/s', 1)} (released at {args.rate:g}/s), "
                      f"{r.get('turns')} turns{capped(r)}", flush=True)
    if "fetch" in parts:
        import gzip

        cache = tmp / "hf-objaverse-v1"
        pairs = dict(synthetic_pairs(800_000))
        uid = next(iter(pairs))
        (cache / pairs[uid]).parent.mkdir(parents=True)
        (cache / pairs[uid]).write_bytes(b"glTF")
        with gzip.open(cache / "object-paths.json.gz", "wt") as f:
            json.dump(pairs, f)
        for impl in ("before", "after"):
            r = run_child(trees[impl], args.cap_gib, "fetch", impl, str(cache), uid, pairs[uid])
            rows.append(("fetch", 800_000, impl, r))
            print(f"fetch  800000 {impl:6}  {fmt(r, 'fetch_s', 's', 4)} per cached object{capped(r)}", flush=True)
        import glob

        for i in range(args.glbs):
            d = cache / "glbs" / f"{i % 160 // 1000:03d}-{i % 160:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:032x}.glb").touch()
        t0 = time.perf_counter()
        n = len(glob.glob(str(cache / "glbs" / "*" / "*.glb")))
        print(f"glob   {n} cached GLBs: {time.perf_counter() - t0:.3f} s (the package does two per download)")
    print(f"load average at end: {os.getloadavg()}")
    (tmp / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"results: {tmp / 'results.json'}")
    subprocess.run(["rm", "-rf", str(trees["before"])], check=False)


if __name__ == "__main__":
    main()
