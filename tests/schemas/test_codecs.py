"""Stores use only Zarr v3 core / registered codecs: a second implementation reads them bit-identically.

The stores are written by the pipeline's own shard writer (create_store / write_samples /
write_marker) for every store kind; tensorstore (Google's C++ Zarr v3 implementation) then opens
each array and must return exactly zarr-python's bytes, absent (never written) chunks included.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from schemas.reader import StoreReader
from schemas.store import LAYER_NAMES, STORE_KINDS, StoreLayout
from tests.trainer.conftest import _disc_sample

ts = pytest.importorskip("tensorstore", reason="tensorstore is a dev dependency (pip install -e .[dev])")

# Zarr v3 core codecs and the registered zstd extension (zarr-developers/zarr-extensions)
STANDARD = {"bytes", "transpose", "blosc", "gzip", "crc32c", "sharding_indexed", "zstd"}


def _write(out, kind: str, n: int = 2):
    from pipeline.engine import shard_writer

    layers = {"objaverse": ("object",), "hoi": LAYER_NAMES, "human": ()}[kind]
    layout = StoreLayout(kind=kind, frames=3, resolution=32, layers=layers, samples_per_shard=n)
    shard_writer.create_store(out, layout, 1, {"title": "codec test"})
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(n):
        s = _disc_sample(layout, rng)
        if kind != "human":
            s["mlo_normal"][1] = 0    # a frame where every layer is absent: a chunk never written
            s["mlo_depth"][1] = 0
        if kind == "human":
            s["person_mask"] = rng.random(s["person_mask"].shape) < 0.3
        samples.append(s)
    shard_writer.write_samples(out, layout, list(range(n)), samples)
    shard_writer.write_marker(out, 0, [{"key": f"item{i}", "rows": [i], "ok": True} for i in range(n)])
    return layout, samples


def _codec_names(codecs: list[dict]) -> set[str]:
    names = set()
    for c in codecs:
        names.add(c["name"])
        cfg = c.get("configuration", {})
        for key in ("codecs", "index_codecs"):
            names |= _codec_names(cfg.get(key, []))
    return names


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_tensorstore_reads_every_array_bit_identically(tmp_path, kind):
    out = tmp_path / f"{kind}.zarr"
    layout, samples = _write(out, kind)
    reader = StoreReader(out)
    for spec in layout.arrays:
        meta = json.loads((out / spec.name / "zarr.json").read_text())
        used = _codec_names(meta["codecs"])
        assert used <= STANDARD, f"{spec.name} uses codecs outside the v3 spec: {used - STANDARD}"
        arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(out / spec.name)}},
                      read=True).result()
        for i in range(len(samples)):
            mine = reader.read(i, names=[spec.name])[spec.name]
            theirs = arr[i].read().result()
            assert theirs.dtype == mine.dtype and theirs.shape == mine.shape, spec.name
            assert theirs.tobytes() == mine.tobytes(), spec.name
            assert np.array_equal(mine, samples[i][spec.name]), spec.name   # lossless


def test_layer_maps_are_one_chunk_per_frame(tmp_path):
    """Schema v3: a frame's layers share one chunk, so a T-frame read touches T chunks per map; a frame
    with no layer present is not on disk (the shard index marks it empty)."""
    out = tmp_path / "hoi.zarr"
    _write(out, "hoi")
    for name in ("mlo_normal", "mlo_depth"):
        meta = json.loads((out / name / "zarr.json").read_text())
        inner = meta["codecs"][0]["configuration"]["chunk_shape"]
        assert inner[:3] == [1, 1, len(LAYER_NAMES)] and inner[3:5] == [32, 32], (name, inner)
        shard = (out / name / "c" / "0").joinpath(*["0"] * (len(inner) - 1)).read_bytes()
        n = 2 * 3  # samples per shard x frames: one chunk each
        index = np.frombuffer(shard[-(n * 16 + 4):-4], dtype="<u8").reshape(2, 3, 2)
        written = index[..., 0] != np.iinfo(np.uint64).max
        assert written.tolist() == [[True, False, True]] * 2, name   # frame 1 has no layer: no chunk


def test_zarrs_codec_pipeline_reads_the_same(tmp_path):
    """The optional Rust codec pipeline (``zarrs``) returns zarr-python's own bytes."""
    pytest.importorskip("zarrs", reason="zarrs is a dependency (pip install -e .)")
    import zarr

    out = tmp_path / "hoi.zarr"
    layout, _ = _write(out, "hoi")
    want = StoreReader(out).read(1)
    # strict: zarrs itself decodes every array (no silent fall-back to zarr-python's codecs)
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "codec_pipeline.strict": True}):
        got = StoreReader(out).read(1)
    for name in want:
        assert want[name].tobytes() == got[name].tobytes(), name
