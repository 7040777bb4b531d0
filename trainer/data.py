"""Dataset over one or more stores, the mixing rule, augmentation draws, and the DataLoader.

Position-indexed: item ``n`` of the infinite training stream is a pure function of
(seed, n): which source (Objaverse / HOI / human, stratified: each block of consecutive
positions holds the sources by the configured weights, ``stratified_cycle``), which store of
that source (by size), which sample, which frame(s), flip, colour-jitter factors and
reference dropout are all drawn from ``np.random.default_rng([seed, n])``. So any worker may
build any item, and resuming = restarting the stream at the number of items consumed
(``StreamSampler(start=...)``), which is what makes resume exact.

Each item reads only what a step needs straight from the Zarr shards: one frame in stage 1,
a T-frame window in stage 2 (plus the references and points). Readers open Zarr lazily in
the process that reads, so workers are spawned (zarr v3 runs an asyncio loop; forking one is unsafe).
The training loader (``make_loader``) sends the layer maps as bounding-box crops (``CompactItems``,
``trainer.compact``) and decodes with the ``zarrs`` codec pipeline when it is installed.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.errors import UserError
from schemas.reader import StoreReader
from schemas.storage import open_location
from schemas.store import LAYER_NAMES
from trainer.compact import compact_item
from trainer.conditions import SOURCES, collate, collate_compact, source_of
from trainer.config import TrainConfig

log = logging.getLogger("manivideo.data")
MAX_REDRAWS = 8  # unreadable draws replaced in a row before the loader gives up (the store is gone)

READ = ("rgb", "mlo_normal", "mlo_depth", "ref_views", "background", "points", "point_normals")
HUMAN_READ = ("rgb", "background", "person_mask")  # + "skeleton" with use_skeleton


def human_as_item_arrays(a: dict, frames: int, resolution: int) -> dict:
    """A human sample's arrays (rgb, background, person_mask[, skeleton]) completed with the zero
    arrays the other kinds carry (paper §3.3: no layers, no object views, no points): one padding
    layer (all zero, layer index -1) so a batch of only human items still has a layer axis."""
    R = resolution
    return {**a, "mlo_normal": np.zeros((frames, 1, R, R, 3), np.uint8),
            "mlo_depth": np.zeros((frames, 1, R, R), np.float16),
            "ref_views": np.zeros((6, R, R, 3), np.uint8), "points": np.zeros((2048, 3), np.float32),
            "point_normals": np.zeros((2048, 3), np.float32)}


def open_stores(paths: list[str], split: str = "all", test_fraction: float = 0.03,
                split_by: str = "hash") -> list[StoreReader]:
    """Readers for ``paths`` on one side of the held-out split (``schemas.split``); one-line UserError
    naming how to make a store when one is missing."""
    from schemas.store import SchemaError

    readers = []
    for p in paths:
        if not open_location(p).exists("zarr.json"):
            raise UserError(f"store {p} does not exist; make one with: python cli.py render-objaverse "
                            f"--source builtin --out {p}")
        try:
            r = StoreReader(p, split=split, test_fraction=test_fraction, split_by=split_by)
        except SchemaError as e:
            raise UserError(str(e)) from None
        if len(r) == 0:
            what = "complete samples yet" if split == "all" else f"complete samples in its {split} split"
            raise UserError(f"store {p} has no {what}")
        readers.append(r)
    if len({r.layout.resolution for r in readers}) > 1:
        raise UserError("all stores of a run must share one resolution (the model input is resized on device)")
    return readers


def stratified_cycle(p: np.ndarray, max_repeat: int = 8) -> np.ndarray:
    """The sources of one block of stream positions: source j appears ~ p_j x block times.

    The paper samples "equally from each dataset in each iteration": with equal weights a block
    is one position per source, so every aligned run of k positions (a step, when batch x
    grad_accum x world is a multiple of k) holds each source once. Other weights get the
    shortest block (a multiple of k, up to ``max_repeat`` k) whose counts, rounded by largest
    remainder, come closest to the weights. ``MixedStores.draw`` shuffles the block per seed."""
    k = len(p)
    best = None
    for m in range(1, max_repeat + 1):
        size = m * k
        counts = np.floor(p * size).astype(int)
        rest = size - counts.sum()
        counts[np.argsort(-(p * size - counts), kind="stable")[:rest]] += 1
        err = np.abs(counts / size - p).max()
        if best is None or err < best[0] - 1e-12:
            best = (err, counts)
    return np.repeat(np.arange(k), best[1])


class MixedStores(Dataset):
    """``ds[n]`` -> one raw item (see trainer.conditions) for stream position n.

    frames: 1 = stage 1 (one random frame), T = stage 2 (a random window of T consecutive frames).
    """

    def __init__(self, paths: list[str], cfg: TrainConfig, frames: int = 1, seed: int | None = None,
                 split: str | None = None):
        # training reads cfg.split ("train": the held-out test items are never seen)
        self.split = cfg.split if split is None else split
        self.unreadable: set[tuple[int, int]] = set()  # (store, index) that failed to read, in this process
        self.readers = open_stores(paths, self.split, cfg.test_fraction, cfg.split_by)
        self.cfg, self.frames = cfg, frames
        self.seed = cfg.seed if seed is None else seed
        short = [str(r.path) for r in self.readers if r.layout.frames < frames]
        if short:
            raise UserError(f"stores {short} have fewer than {frames} frames per clip (stage-2 frames)")
        weights = {"objaverse": cfg.mix_objaverse if cfg.use_objaverse else 0.0, "hoi": cfg.mix_hoi,
                   "human": cfg.mix_human}
        self.store_source = [source_of(r.layout.kind, r.layout.layers) for r in self.readers]
        groups = {s: [i for i, src in enumerate(self.store_source) if src == s] for s in SOURCES}
        # Sources present (and weighted) share each step by weight; absent ones drop out.
        self.sources = [s for s in SOURCES if groups[s] and weights[s] > 0]
        if not self.sources:
            raise UserError("no store can be sampled: every source present has weight 0 (mix_* / use_objaverse)")
        w = np.array([weights[s] for s in self.sources], dtype=np.float64)
        self.source_p = w / w.sum()
        self.cycle = stratified_cycle(self.source_p)
        self.groups = {s: groups[s] for s in self.sources}
        self.group_p = {s: np.array([len(self.readers[i]) for i in g], dtype=np.float64) for s, g in self.groups.items()}
        self.group_p = {s: p / p.sum() for s, p in self.group_p.items()}

    def __len__(self) -> int:  # an epoch has no meaning for a weighted stream; this is for len(loader)
        return sum(len(r) for r in self.readers)

    def draw(self, n: int, attempt: int = 0) -> dict:
        """Everything random about item n (pure function of seed and n); ``attempt`` > 0: the
        replacement drawn when the sample drawn before cannot be read (``load_readable``) — from the
        same source, so the step's stratified mix holds."""
        rng = np.random.default_rng([self.seed, n] if attempt == 0 else [self.seed, n, attempt])
        block, pos = divmod(n, len(self.cycle))  # stratified: each block of positions holds the sources by weight
        source = self.sources[np.random.default_rng([self.seed, block, 1]).permutation(self.cycle)[pos]]
        store = self.groups[source][rng.choice(len(self.groups[source]), p=self.group_p[source])]
        reader = self.readers[store]
        index = int(rng.integers(len(reader)))
        start = int(rng.integers(reader.layout.frames - self.frames + 1))
        c = self.cfg
        return dict(source=source, store=store, index=index, start=start, flip=bool(rng.random() < c.flip_p),
                    jitter=(1 + rng.uniform(-c.color_jitter, c.color_jitter, 3)).astype(np.float32),
                    keep=float(rng.random() >= c.ref_dropout))

    def __getitem__(self, n: int) -> dict:
        return self.load_readable(int(n))

    def load_readable(self, n: int, buffers=None) -> dict:
        """``load`` of item n's draw; a sample that cannot be read (a shard file lost or corrupt
        since the index was built, a bucket error that outlived the client's retries) is logged
        once, remembered in this process, and replaced by the draw of attempt 1, 2, ... of the same
        position: the stream stays a pure function of (seed, n) and the unreadable samples, so a
        resume neither crashes at the same position again nor changes the other items.
        ``buffers``: store -> decode buffers (``CompactItems.buffers``)."""
        last = None
        for attempt in range(MAX_REDRAWS + 1):
            d = self.draw(n, attempt)
            where = (d["store"], d["index"])
            if where in self.unreadable:
                continue
            try:
                return self.load(d["store"], d["index"], d["start"], flip=d["flip"], jitter=d["jitter"],
                                 keep=d["keep"], buffers=buffers(d["store"]) if buffers else None)
            except Exception as e:  # noqa: BLE001  (any read error: the sample is skipped, never the run)
                last = e
                self.unreadable.add(where)
                reader = self.readers[d["store"]]
                log.warning("skipping unreadable sample %d (row %d) of %s: %s: %s", d["index"],
                            reader.row(d["index"]), reader.path, type(e).__name__,
                            (str(e).splitlines() or [""])[0][:200])
        raise RuntimeError(f"stream position {n}: {MAX_REDRAWS + 1} draws in a row could not be read "
                           f"(last: {type(last).__name__}: {last}); is the store reachable?")

    def load(self, store: int, index: int, start: int = 0, flip: bool = False, jitter=None, keep: float = 1.0,
             buffers: dict | None = None) -> dict:
        """Raw item of sample ``index`` of store ``store``, frames [start, start + self.frames).
        ``buffers``: arrays to decode the layer maps into (``StoreReader.read``; see ``CompactItems``)."""
        reader = self.readers[store]
        human = reader.layout.kind == "human"
        window = slice(start, start + self.frames)
        has_valid = "valid" in reader.array_names  # hoi and human stores (schema v4); Objaverse: all valid
        if human:
            names = HUMAN_READ + (("skeleton",) if self.cfg.use_skeleton else ()) + (("valid",) if has_valid else ())
            a = human_as_item_arrays(reader.read(index, names=names, frames=window), self.frames,
                                     reader.layout.resolution)
            layer_idx = np.array([-1], dtype=np.int64)
            flip = False  # the skeleton's colours tell left from right: never mirrored
        else:
            a = reader.read(index, names=READ + (("valid",) if has_valid else ()), frames=window, buffers=buffers)
            layer_idx = np.array([LAYER_NAMES.index(n) for n in reader.layout.layers], dtype=np.int64)
            R = reader.layout.resolution
            a["person_mask"] = np.zeros((self.frames, R, R), bool)
            if self.cfg.use_skeleton:
                a["skeleton"] = np.zeros((self.frames, R, R, 3), np.uint8)
        refs = [a["ref_views"], a["background"][None]]
        if self.cfg.ref_first_frame:
            refs.append(a["rgb"][:1] if start == 0 else reader.read(index, names=["rgb"], frames=[0])["rgb"])
        item = {
            "rgb": a["rgb"], "normal": a["mlo_normal"], "depth": a["mlo_depth"], "layer_idx": layer_idx,
            "refs": np.concatenate(refs, axis=0),
            "points": np.concatenate([a["points"], a["point_normals"]], axis=1).astype(np.float32),
            "source": np.int64(SOURCES.index(self.store_source[store])),
            "ref_keep": np.float32(keep),
            "jitter": np.ones(3, np.float32) if jitter is None else np.asarray(jitter, np.float32),
            "flip": np.bool_(flip),  # applied on the training device (trainer.conditions.flip_batch)
            "person_mask": a["person_mask"],
            "valid": a["valid"] if has_valid else np.ones(a["rgb"].shape[:3], bool),
        }
        if self.cfg.use_skeleton:
            item["skeleton"] = a["skeleton"]
        return item


class CompactItems(Dataset):
    """``MixedStores`` items with their layer maps as per-(frame, layer) boxes (``trainer.compact``),
    decoded into buffers that this process reuses from item to item (the dense maps of a
    24 x 512^2 13-layer clip are 413 MB: fresh pages for each item cost more than decoding)."""

    def __init__(self, dataset: MixedStores):
        self.dataset = dataset
        self._buffers: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getstate__(self):  # workers start with no buffers
        return {"dataset": self.dataset, "_buffers": {}}

    def buffers(self, store: int) -> dict[str, np.ndarray]:
        if store not in self._buffers:
            lay, f = self.dataset.readers[store].layout, self.dataset.frames
            shape = (f, len(lay.layers), lay.resolution, lay.resolution)
            self._buffers[store] = {"mlo_normal": np.empty(shape + (3,), np.uint8),
                                    "mlo_depth": np.empty(shape, np.float16)}
        return self._buffers[store]

    def __getitem__(self, n: int) -> dict:
        return compact_item(self.dataset.load_readable(int(n), buffers=self.buffers))


class StreamSampler(Sampler):
    """Positions start, start+1, ... of this rank's share of the stream (rank r of W gets n*W + r)."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1, length: int | None = None):
        self.start, self.rank, self.world, self.length = start, rank, world, length

    def __iter__(self):
        n = self.start
        while self.length is None or n < self.start + self.length:
            yield n * self.world + self.rank
            n += 1

    def __len__(self):
        return self.length if self.length is not None else 2**62


CODEC_PIPELINES = ("auto", "zarr", "zarrs")


def use_codec_pipeline(name: str = "auto") -> str:
    """Decode stores in this process with zarr-python's own codec pipeline ("zarr") or the Rust one of
    the ``zarrs`` package ("zarrs", a dependency; "zarr" is kept for comparison and as a fall-back); "auto"
    = zarrs when it imports. Same bytes either way (tests/schemas/test_codecs.py); zarrs loads a
    24 x 512^2 13-layer HOI clip ~2x faster. Arrays opened afterwards use it. Returns the one in use."""
    import zarr

    if name not in CODEC_PIPELINES:
        raise UserError(f"codec pipeline must be one of {CODEC_PIPELINES}, got {name!r}")
    if name in ("auto", "zarrs"):
        try:
            import zarrs  # noqa: F401
            name = "zarrs"
        except ImportError:
            if name == "zarrs":
                raise UserError("codec pipeline 'zarrs' needs the optional package: pip install zarrs") from None
            name = "zarr"
    path = "zarrs.ZarrsCodecPipeline" if name == "zarrs" else "zarr.core.codec_pipeline.BatchedCodecPipeline"
    zarr.config.set({"codec_pipeline.path": path})
    return name


def _worker_init(worker_id: int, codec_pipeline: str = "auto") -> None:
    # A worker told to stop while Zarr reads are in flight aborts in interpreter teardown
    # ("terminate called without an active exception"); it holds nothing worth finalising.
    atexit.register(os._exit, 0)
    use_codec_pipeline(codec_pipeline)


REMOTE_PREFETCH = 6  # batches each worker reads ahead when a store is on object storage (latency, not bandwidth)


def make_loader(dataset: MixedStores, batch_size: int, start_item: int = 0, rank: int = 0, world: int = 1,
                num_workers: int = 0, pin_memory: bool = False, compact: bool = True,
                codec_pipeline: str = "auto", prefetch_factor: int | None = None) -> DataLoader:
    """Infinite loader of collated raw batches, starting after ``start_item`` items of this rank.

    ``compact``: layer maps travel as per-(frame, layer) bounding-box crops (``trainer.compact``; a
    24 x 512^2 13-layer HOI clip moves ~45 MB instead of ~440 MB), expanded by ``prepare_batch`` on
    the training device; False sends the dense maps (``trainer.conditions.collate``).
    ``codec_pipeline``: see ``use_codec_pipeline``; set in each worker. With num_workers=0 an explicit
    "zarr" / "zarrs" is set in this process, and "auto" leaves this process's Zarr configuration alone.
    ``prefetch_factor``: batches each worker keeps in flight (default 2; ``REMOTE_PREFETCH`` when a
    store is on object storage, so request latency overlaps with the training step; a sample's arrays
    are already read concurrently, ``StoreReader.read``).
    """
    if prefetch_factor is None:
        remote = any(not r.loc.is_local for r in dataset.readers)
        prefetch_factor = REMOTE_PREFETCH if remote else 2
    kw = {}
    if num_workers > 0:
        kw = dict(multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=prefetch_factor,
                  worker_init_fn=functools.partial(_worker_init, codec_pipeline=codec_pipeline))
    elif codec_pipeline != "auto":
        use_codec_pipeline(codec_pipeline)
    return DataLoader(CompactItems(dataset) if compact else dataset, batch_size=batch_size,
                      sampler=StreamSampler(start_item, rank, world),
                      num_workers=num_workers, collate_fn=collate_compact if compact else collate,
                      pin_memory=pin_memory, drop_last=True, **kw)

