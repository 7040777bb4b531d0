"""The Ray layer: plan shards, schedule them, retry, record, resume. It does no data work.

A ``Job`` names a step (a module-level function ``step(item, options) -> samples``), the
items, the store layout and the options. ``run`` plans the run (``plan_run``: fingerprint,
shards, what an existing store already holds), creates the store (or checks that an existing
one was made by the same job), and hands the shards to the driver loop (``driver``), which
keeps at most ``2 * workers`` shard tasks in flight, shows progress (from the shard journals,
so it moves per item) and ends with a summary. Worker processes that die are restarted by Ray
(``max_retries``); the shard journal makes a retry skip finished items, try the item in flight
again, and record it only if its own worker dies a second time (see ``shard_task``). A node
lost mid-run is the same to the runner: its tasks are retried on the nodes left.
``retry_failed`` re-runs recorded failures of finished shards in place.

What the driver holds is bounded at millions of items: the items as an ``ItemTable`` (no
Python object per item), shards as an array of bounds, finished shards as a bit per shard.

A run ends with a ``RunSummary``; ``RunSummary.raise_if_incomplete`` then raises what the CLI
turns into its exit code: ``StorageError`` (the store's device refused writes: no new shard was
started) or ``RunIncomplete`` (some shards kept failing outside any item; the rest were done).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.engine import plan, shard_writer
from pipeline.engine.driver import JournalProgress, LoopResult, ShardScheduler
from pipeline.engine.items import ItemTable, WorkItem
from pipeline.engine.journal import ShardJournal
from pipeline.engine.shard_task import process_shard, read_journal
from pipeline.errors import RunIncomplete, StorageError, UserError, storage_error
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
    items: Sequence[WorkItem]      # a list, or an ItemTable (compact: for millions of items)
    step: str                      # "module:function", run inside workers
    options: dict                  # JSON-able; passed to the step; part of the fingerprint
    title: str
    num_gpus_per_worker: float = 0.0
    notes: list[str] = field(default_factory=list)  # lines for the summary (e.g. windows skipped); not hashed
    run_options: dict = field(default_factory=dict)  # JSON-able; passed to the step with options; not hashed
    #                                                  (what does not change the output, e.g. a download mirror)

    def identity(self) -> dict:
        """What the fingerprint hashes besides the items."""
        return {"title": self.title, "layout": self.layout.to_attrs(), "step": self.step, "options": self.options}

    def fingerprint(self) -> str:
        return plan.fingerprint_and_duplicate(self.identity(), ItemTable.of(self.items))[0]


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
    failures: list[dict] = field(default_factory=list)   # the store's failure records (the first 1000)
    failure_counts: Counter = field(default_factory=Counter)  # all of them, by (stage, reason)
    store_bytes: int = 0
    notes: list[str] = field(default_factory=list)   # the job's own lines (Job.notes)
    shard_failures: dict[int, str] = field(default_factory=dict)  # shard -> why it kept failing
    stopped: StorageError | None = None   # the store refused a write: no new shard was started
    shards_not_started: int = 0            # ... and these were left for the next run

    def format(self) -> str:
        rate = (self.items_ok + self.items_failed) / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"== {self.title}: {'stopped' if self.stopped else 'done'} in {self.seconds:.1f} s ==",
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
        by = self.failure_counts or Counter((f["stage"], f["reason"]) for f in self.failures)
        if by:
            lines.append(f"failures       {sum(by.values())} (all in {str(self.out).rstrip('/')}/failures.jsonl); "
                         "most common:")
            lines += [f"  {n:>5} x {stage}: {reason}" for (stage, reason), n in by.most_common(5)]
        if self.shard_failures:
            lines.append(f"failed shards  {len(self.shard_failures)} kept failing outside any item (not marked; "
                         "the next run tries them again):")
            lines += [f"  shard {k}: {why}" for k, why in sorted(self.shard_failures.items())[:5]]
            if len(self.shard_failures) > 5:
                lines.append(f"  ... and {len(self.shard_failures) - 5} more")
        if self.stopped is not None:
            lines.append(f"stopped        the store refused a write; {self.shards_not_started} shards not started")
        return "\n".join(lines)

    def raise_if_incomplete(self) -> None:
        """Raise the run's ``StorageError``, or ``RunIncomplete`` if shards kept failing."""
        if self.stopped is not None:
            raise self.stopped
        if self.shard_failures:
            n = len(self.shard_failures)
            raise RunIncomplete(f"{n} shard{'s' if n != 1 else ''} kept failing (see 'failed shards' above); "
                                "the other shards are done: run the same command again to retry them")


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


def auto_gpus_per_worker(workers: int, address: str | None) -> float:
    """GPUs per worker when ``--gpus-per-worker`` is not given: on a local machine, share the
    visible GPUs among the workers (at most 1 each); on a cluster (``--address``), 0."""
    if address is not None or not Path("/proc/driver/nvidia").exists():  # no NVIDIA driver: skip importing torch
        return 0.0
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        n = 0
    return min(1.0, n / workers) if n else 0.0


def check_out(out, fingerprint: str, overwrite: bool) -> bool:
    """Decide what to do with ``--out`` without writing anything; True = resume it.

    Only a manivideo store is ever replaced (``--overwrite``, or one whose creation was
    interrupted before its manifest); any other non-empty folder is refused.
    """
    out = open_location(out)
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
    if manifest.get("fingerprint") != fingerprint:
        raise UserError(f"{out} holds a store made with other arguments or inputs; "
                        "use another --out, or --overwrite to replace it")
    return True


@dataclass
class RunPlan:
    """What a run will do. Shard k holds items ``bounds[k] .. bounds[k+1]-1``; ``todo``: the
    shards to run, in order (unmarked ones, then ``--retry-failed`` ones)."""

    items: ItemTable
    bounds: np.ndarray
    fingerprint: str
    resume: bool
    todo: np.ndarray
    retry: dict[int, list[str]]
    items_skipped: int
    notes: list[str]

    @property
    def n_shards(self) -> int:
        return len(self.bounds) - 1


def plan_run(job: Job, overwrite: bool = False, retry_failed: list[str] | None = None) -> RunPlan:
    """Plan a run without writing anything; UserError on bad input. Time and memory are linear
    in the items, with no Python object per item (``ItemTable``, ``plan``); resume lists the
    markers' names once (``shard_writer.completed_shards``)."""
    items = ItemTable.of(job.items)
    if not len(items):
        raise UserError("no input items to process (empty selection)")
    fingerprint, dup = plan.fingerprint_and_duplicate(job.identity(), items)
    if dup is not None:
        raise UserError(f"input item {dup!r} appears more than once; item keys must be unique")
    try:
        bounds = plan.shard_bounds(items.n_samples, job.layout.samples_per_shard)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = job.out
    resume = check_out(out, fingerprint, overwrite)
    done = np.zeros(len(bounds) - 1, bool)
    if resume:
        marked = np.fromiter(shard_writer.completed_shards(out), np.int64)
        done[marked[marked < len(done)]] = True
    retry: dict[int, list[str]] = {}
    notes = list(job.notes)
    if retry_failed is not None:
        if not resume:
            raise UserError(f"--retry-failed needs the existing store at --out {out}, made with the same arguments")
        # shards whose marker or files are not what was written (schemas.index) are redone whole
        corrupt = {c["shard"]: [items[i].key for i in plan.shard_items(bounds, c["shard"])]
                   for c in sample_index.build(out).corrupt if c["shard"] < len(bounds) - 1}
        wanted, recorded = retry_plan(out, list(retry_failed), corrupt)
        retry = {k: keys for k, keys in wanted.items() if k < len(done) and done[k]}
        unknown = sorted(set(retry_failed) - recorded)
        if unknown:  # a typo must not pass as "nothing to retry"
            notes.append(f"--retry-failed: no recorded failures of stage {', '.join(unknown)} "
                         f"(recorded: {', '.join(sorted(recorded)) or 'none'})")
    todo = np.concatenate([np.flatnonzero(~done), np.asarray(sorted(retry), np.int64)]).astype(np.int64)
    skipped = int(np.diff(bounds)[done].sum()) - sum(map(len, retry.values()))
    return RunPlan(items, bounds, fingerprint, resume, todo, retry, skipped, notes)


def create(job: Job, rp: RunPlan) -> str:
    """Create the store; returns its nonce (new for every creation)."""
    nonce = uuid.uuid4().hex
    shard_writer.create_store(job.out, job.layout, rp.n_shards, {
        "title": job.title, "fingerprint": rp.fingerprint, "nonce": nonce, "step": job.step,
        "options": job.options, "n_items": len(rp.items), "n_shards": rp.n_shards, "created": time.time(),
        "argv": sys.argv,
    })
    return nonce


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


def retry_plan(out, stages: list[str], corrupt: dict[int, list[str]] | None = None
               ) -> tuple[dict[int, list[str]], set[str]]:
    """(finished shards with recorded failures to re-run: shard -> failed keys whose stage is
    in ``stages`` (every stage when empty), the stages of all recorded failures); one pass
    over the markers. ``corrupt``: shard -> all its keys, for shards whose marker or files are not
    what was written (``schemas.index``): redone whole, whatever the stages."""
    wanted, recorded = {}, set()
    for marker in shard_writer.iter_markers(out):
        failed = [r for r in marker["items"] if not r["ok"]]
        recorded.update(r["stage"] for r in failed)
        keys = [r["key"] for r in failed if not stages or r["stage"] in stages]
        if keys:
            wanted[marker["shard"]] = keys
    wanted.update(corrupt or {})
    return wanted, recorded


def write_index(out) -> list[dict]:
    """Build the sample index from the markers (checking every shard file against its marker) and
    write it into the store; returns the corrupt shards it left out."""
    manifest = shard_writer.read_manifest(out) or {}
    index = sample_index.build(out)
    sample_index.write(out, index, manifest.get("nonce"))
    return index.corrupt


def run(job: Job, workers: int, address: str | None = None, timeout_s: float = 600.0, max_retries: int = 3,
        progress: bool = True, overwrite: bool = False, retry_failed: list[str] | None = None) -> RunSummary:
    """Run (or resume) a job; returns the summary (``raise_if_incomplete`` says how it ended).
    Raises UserError on bad arguments, StorageError if the store cannot even be created.

    ``retry_failed``: also re-run the recorded failures of these stages (all stages if the
    list is empty) in finished shards of the existing store; good samples are not touched.
    """
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    rp = plan_run(job, overwrite, retry_failed)
    out, items = open_location(job.out), rp.items
    # Ray first: a bad --address or an impossible GPU request must not leave a store behind
    started_ray = _init_ray(workers, address) if len(rp.todo) else False
    import ray

    try:
        if len(rp.todo) and job.num_gpus_per_worker > 0 and ray.cluster_resources().get("GPU", 0) < job.num_gpus_per_worker:
            raise UserError(f"each worker asks for {job.num_gpus_per_worker:g} GPU but the Ray cluster has "
                            f"{ray.cluster_resources().get('GPU', 0):g}; lower --gpus-per-worker")
        nonce = shard_writer.read_manifest(out)["nonce"] if rp.resume else create(job, rp)
        if len(rp.todo):
            sample_index.invalidate(out)  # readers use the markers until this run rebuilds the index
    except BaseException as e:
        if started_ray:
            ray.shutdown()
        refused = storage_error(e, job.out) if isinstance(e, OSError) else None
        if refused is not None:
            raise refused from None
        raise
    summary = RunSummary(title=job.title, out=job.out, items_total=len(items), shards_total=rp.n_shards,
                         items_skipped=rp.items_skipped, notes=rp.notes)
    S, attrs, run_id = job.layout.samples_per_shard, job.layout.to_attrs(), uuid.uuid4().hex[:12]
    options = {**job.options, **job.run_options}
    remote = None
    if len(rp.todo):
        remote = ray.remote(num_cpus=1, num_gpus=job.num_gpus_per_worker, max_retries=max_retries,
                            retry_exceptions=False)(process_shard)

    def submit(k: int):
        entries = list(zip((items[i] for i in plan.shard_items(rp.bounds, k)),
                           plan.shard_rows(items.n_samples, rp.bounds, k, S), strict=True))
        again = {"run": run_id, "keys": rp.retry[k]} if k in rp.retry else None
        return remote.remote(out.url, attrs, k, entries, job.step, options, timeout_s, nonce, again, run_id)

    finished = 0

    def on_marker(k: int, marker: dict) -> None:
        nonlocal finished
        summary.shards_run += 1
        for rec in marker["items"]:
            if k in rp.retry and rec["key"] not in rp.retry[k]:
                continue  # a good (or not retried) item of a retried shard: counted as skipped
            finished += 1
            if rec["ok"]:
                summary.items_ok += 1
                summary.samples_ok += len(rec["rows"])
                summary.samples_skipped.update(rec.get("skipped") or {})
            else:
                summary.items_failed += 1

    from tqdm import tqdm

    bar = tqdm(total=len(items), initial=summary.items_skipped, unit="item", disable=not progress,
               dynamic_ncols=True, desc=job.title)

    def show(live: int) -> None:
        bar.n = min(len(items), summary.items_skipped + finished + live)
        bar.set_postfix(ok=summary.items_ok, failed=summary.items_failed, refresh=False)
        bar.refresh()

    # per-item progress reads the in-flight journals incrementally (local files); on an object store
    # that would be a LIST and GETs per shard per tick, so progress moves per finished shard there
    scheduler = ShardScheduler(
        submit, 2 * workers, job.out, on_marker,
        count_ended=lambda k: len(read_journal(ShardJournal(out, k)).ended),
        progress=JournalProgress(out.root) if progress and out.is_local else None, show=show,
        quiet=frozenset(rp.retry))
    try:
        result = scheduler.run(rp.todo) if len(rp.todo) else LoopResult()
    finally:
        bar.close()
        if started_ray:
            ray.shutdown()
    summary.shard_failures, summary.stopped = result.failed, result.stopped
    summary.shards_not_started = result.not_started
    try:
        summary.failures, summary.failure_counts = shard_writer.write_failures(out)
        corrupt = write_index(out) if len(rp.todo) or not sample_index.is_current(out, nonce) else []
    except (OSError, StorageError) as e:  # a full device may refuse these too: the markers keep the records
        refused = storage_error(e, job.out)
        if refused is None:
            raise
        summary.stopped = summary.stopped or refused
        corrupt = []
    if corrupt:
        summary.notes.append(f"{len(corrupt)} shards left out of the store: their files are not what their markers "
                             f"record (first: shard {corrupt[0]['shard']}, {corrupt[0]['reason']}); "
                             "--retry-failed redoes them")
    summary.seconds = time.perf_counter() - t0
    summary.store_bytes = shard_writer.store_bytes(out)
    return summary
