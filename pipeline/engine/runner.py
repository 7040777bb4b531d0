"""The Ray layer: plan shards, schedule them, retry, record, resume. It does no data work.

A ``Job`` names a step (a module-level function ``step(item, options) -> samples``), the
items, the store layout and the options. ``run`` creates the store (or checks that an
existing one was made by the same job), skips shards that have completion markers,
keeps at most ``2 * workers`` shard tasks in flight, shows progress (from the shard
journals, so it moves per item) and ends with a summary. Worker processes that die are
restarted by Ray (``max_retries``); the shard journal makes a retry skip finished items,
try the item in flight again, and record it only if it dies a second time (see
``shard_task``). A node lost mid-run is the same to the runner: its tasks are retried on
the nodes left. ``retry_failed`` re-runs recorded failures of finished shards in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engine import shard_writer
from pipeline.engine.journal import ShardJournal
from pipeline.engine.shard_task import WorkItem, process_shard, read_journal
from pipeline.errors import UserError
from schemas import StoreLayout
from schemas import index as sample_index
from schemas.storage import open_location

# one core per worker process: workers = cores, no oversubscription (llvmpipe, BLAS, zarr's
# codec thread pool; blosc's own threads are set in shard_task)
WORKER_ENV = {"PYOPENGL_PLATFORM": "egl", "LP_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1", "ZARR_THREADING__MAX_WORKERS": "1", "PYTHONWARNINGS": "ignore"}


@dataclass
class Job:
    out: Path | str                # a folder, or an object-store URL (schemas.storage)
    layout: StoreLayout
    items: list[WorkItem]
    step: str                      # "module:function", run inside workers
    options: dict                  # JSON-able; passed to the step; part of the fingerprint
    title: str
    num_gpus_per_worker: float = 0.0
    notes: list[str] = field(default_factory=list)  # lines for the summary (e.g. windows skipped); not hashed

    def fingerprint(self) -> str:
        body = {"title": self.title, "layout": self.layout.to_attrs(), "step": self.step, "options": self.options,
                "items": [[i.key, i.locator, i.n_samples] for i in self.items]}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class RunSummary:
    title: str
    out: Path | str
    items_total: int = 0
    items_ok: int = 0
    items_failed: int = 0
    items_skipped: int = 0          # in shards completed by an earlier run
    samples_ok: int = 0
    samples_skipped: Counter = field(default_factory=Counter)  # reason -> samples a step refused (shard_task.Skipped)
    shards_total: int = 0
    shards_run: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    store_bytes: int = 0
    notes: list[str] = field(default_factory=list)   # the job's own lines (Job.notes)

    def format(self) -> str:
        rate = (self.items_ok + self.items_failed) / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"== {self.title}: done in {self.seconds:.1f} s ==",
            f"store          {self.out}",
            f"items          {self.items_total} total: {self.items_ok} ok, {self.items_failed} failed, "
            f"{self.items_skipped} already done by an earlier run",
            f"samples        {self.samples_ok} written this run",
            f"shards         {self.shards_run} run, {self.shards_total} in the store",
            f"throughput     {rate:.2f} items/s",
            f"size on disk   {self.store_bytes / 2**20:.1f} MiB",
        ]
        if self.samples_skipped:
            lines.append(f"skipped        {sum(self.samples_skipped.values())} samples not written: " + "; ".join(
                f"{n} x {reason}" for reason, n in self.samples_skipped.most_common()))
        lines += [f"note           {n}" for n in self.notes]
        if self.failures:
            by = Counter((f["stage"], f["reason"]) for f in self.failures)
            lines.append(f"failures       {len(self.failures)} (all in {str(self.out).rstrip('/')}/failures.jsonl); "
                         "most common:")
            lines += [f"  {n:>5} x {stage}: {reason}" for (stage, reason), n in by.most_common(5)]
        return "\n".join(lines)


MAX_AUTO_SAMPLES_PER_SHARD = 16


def auto_samples_per_shard(total_samples: int, workers: int, out, cap: int = MAX_AUTO_SAMPLES_PER_SHARD) -> int:
    """Shard size for ``--samples-per-shard 0`` (auto).

    An existing store keeps its own (resume must see the same shards). Otherwise up to
    ``cap`` samples per shard (few files at 800K objects), but small enough that every
    worker gets at least two shards on small runs.
    """
    loc = open_location(out)
    meta = loc.read_json_or_none("zarr.json")
    if meta is not None and loc.exists(shard_writer.MANIFEST):
        return int(meta["attributes"]["samples_per_shard"])
    return max(1, min(cap, -(-total_samples // (2 * max(1, workers)))))


def check_out(job: Job, overwrite: bool) -> bool:
    """Decide what to do with ``--out`` without writing anything; True = resume it.

    Only a manivideo store is ever replaced (``--overwrite``, or one whose creation was
    interrupted before its manifest); any other non-empty folder is refused.
    """
    out = open_location(job.out)
    if out.is_local and out.root.exists() and not out.root.is_dir():
        raise UserError(f"--out {out} is a file, not a store folder")
    if out.is_empty():
        return False
    if not shard_writer.is_store(out):
        raise UserError(f"--out {out} exists and is not a manivideo store; choose an empty or new folder "
                        "(it is never replaced, not even with --overwrite)")
    manifest = shard_writer.read_manifest(out)
    if manifest is None or overwrite:
        return False
    if manifest.get("fingerprint") != job.fingerprint():
        raise UserError(f"{out} holds a store made with other arguments or inputs; "
                        "use another --out, or --overwrite to replace it")
    return True


def create(job: Job, shards: list[list[int]]) -> str:
    """Create the store; returns its nonce (new for every creation)."""
    nonce = uuid.uuid4().hex
    shard_writer.create_store(job.out, job.layout, len(shards), {
        "title": job.title, "fingerprint": job.fingerprint(), "nonce": nonce, "step": job.step,
        "options": job.options, "n_items": len(job.items), "n_shards": len(shards), "created": time.time(),
        "argv": sys.argv,
    })
    return nonce


def _count_ended(out, shards, made: bool = False) -> int:
    """Items the shards' journals settle: recorded failures and items whose rows are in the shard
    files (distinct keys, so an attempt that redoes items does not count as progress); with
    ``made``, also items made and not yet written (the progress bar moves per item)."""
    n, loc = 0, open_location(out)
    for k in shards:
        state = read_journal(ShardJournal(loc, k))
        n += len(state.ended) + (len(state.made) if made else 0)
    return n


def _init_ray(workers: int, address: str | None):
    import ray

    if ray.is_initialized():
        return False
    os.environ.update(WORKER_ENV)  # local workers inherit the driver's environment
    kwargs = dict(runtime_env={"env_vars": WORKER_ENV}, include_dashboard=False, logging_level="ERROR",
                  log_to_driver=True)
    if address:
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0][:160]}") from None
    else:
        ray.init(num_cpus=workers, **kwargs)
    return True


def retry_stages(value: str | None) -> list[str] | None:
    """``--retry-failed`` as typed: None (not given) -> None; "all" or "" -> [] (every stage);
    "load, fetch" -> ["load", "fetch"]."""
    if value is None:
        return None
    return [x.strip() for x in value.split(",") if x.strip() not in ("", "all")]


def retry_plan(out, stages: list[str], corrupt: dict[int, list[str]] | None = None) -> dict[int, list[str]]:
    """Finished shards with recorded failures to re-run: shard -> failed keys whose stage is
    in ``stages`` (every stage when empty). ``corrupt``: shard -> all its keys, for shards whose
    marker or files are not what was written (``schemas.index``): redone whole, whatever the stages."""
    plan = {}
    for marker in shard_writer.read_markers(out):
        keys = [r["key"] for r in marker["items"] if not r["ok"] and (not stages or r["stage"] in stages)]
        if keys:
            plan[marker["shard"]] = keys
    plan.update(corrupt or {})
    return plan


def write_index(out) -> list[dict]:
    """Build the sample index from the markers (checking every shard file against its marker) and
    write it into the store; returns the corrupt shards it left out."""
    manifest = shard_writer.read_manifest(out) or {}
    index = sample_index.build(out)
    sample_index.write(out, index, manifest.get("nonce"))
    return index.corrupt


def run(job: Job, workers: int, address: str | None = None, timeout_s: float = 600.0, max_retries: int = 3,
        progress: bool = True, overwrite: bool = False, retry_failed: list[str] | None = None) -> RunSummary:
    """Run (or resume) a job; returns the summary. Raises UserError on bad arguments.

    ``retry_failed``: also re-run the recorded failures of these stages (all stages if the
    list is empty) in finished shards of the existing store; good samples are not touched.
    """
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if not job.items:
        raise UserError("no input items to process (empty selection)")
    dup = [k for k, n in Counter(i.key for i in job.items).items() if n > 1]
    if dup:
        raise UserError(f"input item {dup[0]!r} appears more than once; item keys must be unique")
    t0 = time.perf_counter()
    n_samples = [i.n_samples for i in job.items]
    try:
        shards = shard_writer.plan_shards(n_samples, job.layout.samples_per_shard)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = open_location(job.out)
    resume = check_out(job, overwrite)
    done = shard_writer.completed_shards(out) if resume else set()
    retry: dict[int, list[str]] = {}
    if retry_failed is not None:
        if not resume:
            raise UserError(f"--retry-failed needs the existing store at --out {out}, made with the same arguments")
        corrupt = {c["shard"]: [job.items[i].key for i in shards[c["shard"]]]
                   for c in sample_index.build(out).corrupt if c["shard"] < len(shards)}
        retry = {k: keys for k, keys in retry_plan(out, list(retry_failed), corrupt).items() if k in done}
        recorded = {r["stage"] for m in shard_writer.read_markers(out) for r in m["items"] if not r["ok"]}
        unknown = sorted(set(retry_failed) - recorded)
        if unknown:  # a typo must not pass as "nothing to retry"
            job = dataclasses.replace(job, notes=[*job.notes, f"--retry-failed: no recorded failures of stage "
                                                  f"{', '.join(unknown)} (recorded: {', '.join(sorted(recorded)) or 'none'})"])
    retry_run = uuid.uuid4().hex[:12]
    todo = [k for k in range(len(shards)) if k not in done] + sorted(retry)
    # Ray first: a bad --address or an impossible GPU request must not leave a store behind
    started_ray = _init_ray(workers, address) if todo else False
    import ray

    try:
        if todo and job.num_gpus_per_worker > 0 and ray.cluster_resources().get("GPU", 0) < job.num_gpus_per_worker:
            raise UserError(f"each worker asks for {job.num_gpus_per_worker:g} GPU but the Ray cluster has "
                            f"{ray.cluster_resources().get('GPU', 0):g}; lower --gpus-per-worker")
        nonce = shard_writer.read_manifest(out)["nonce"] if resume else create(job, shards)
        if todo:
            sample_index.invalidate(out)  # readers use the markers until this run rebuilds the index
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    summary = RunSummary(title=job.title, out=job.out, items_total=len(job.items), shards_total=len(shards),
                         items_skipped=sum(len(shards[k]) for k in done) - sum(map(len, retry.values())),
                         notes=list(job.notes))

    remote = None
    if todo:
        remote = ray.remote(num_cpus=1, num_gpus=job.num_gpus_per_worker, max_retries=max_retries,
                            retry_exceptions=False)(process_shard)
    attrs = job.layout.to_attrs()

    def submit(k):
        entries = list(zip((job.items[i] for i in shards[k]),
                           shard_writer.shard_rows(job.layout, k, n_samples, shards[k]), strict=True))
        again = {"run": retry_run, "keys": retry[k]} if k in retry else None
        return remote.remote(out.url, attrs, k, entries, job.step, job.options, timeout_s, nonce, again)

    from tqdm import tqdm

    bar = tqdm(total=len(job.items), initial=summary.items_skipped, unit="item", disable=not progress,
               dynamic_ncols=True, desc=job.title)
    pending: dict = {}
    queue = list(todo)
    resubmits: Counter = Counter()
    finished_items = 0
    try:
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                k = queue.pop(0)
                pending[submit(k)] = k
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                k = pending.pop(ref)
                try:
                    marker = ray.get(ref)
                except ray.exceptions.RayError as e:
                    # retries exhausted: go on while each attempt still settles items
                    ended = _count_ended(out, [k])
                    if ended > resubmits[("ended", k)] and resubmits[k] < 100:
                        resubmits[k] += 1
                        resubmits[("ended", k)] = ended
                        queue.append(k)
                        continue
                    raise RuntimeError(f"shard {k} keeps failing: {str(e).splitlines()[0][:200]}") from None
                summary.shards_run += 1
                for rec in marker["items"]:
                    if k in retry and rec["key"] not in retry[k]:
                        continue  # a good (or not retried) item of a retried shard: counted as skipped
                    finished_items += 1
                    if rec["ok"]:
                        summary.items_ok += 1
                        summary.samples_ok += len(rec["rows"])
                        summary.samples_skipped.update(rec.get("skipped") or {})
                    else:
                        summary.items_failed += 1
            live = _count_ended(out, [k for k in pending.values() if k not in retry], made=True)
            bar.n = min(len(job.items), summary.items_skipped + finished_items + live)
            bar.set_postfix(ok=summary.items_ok, failed=summary.items_failed, refresh=False)
            bar.refresh()
    finally:
        bar.close()
        if started_ray:
            ray.shutdown()
    summary.failures = shard_writer.write_failures(out)
    corrupt = write_index(out) if todo or not sample_index.is_current(out, nonce) else []
    if corrupt:
        summary.notes.append(f"{len(corrupt)} shards left out of the store: their files are not what their markers "
                             f"record (first: shard {corrupt[0]['shard']}, {corrupt[0]['reason']}); "
                             "--retry-failed redoes them")
    summary.seconds = time.perf_counter() - t0
    summary.store_bytes = shard_writer.store_bytes(out)
    return summary
