"""Our own sharding_indexed writer: the bytes zarr-python would store, merges that keep
finished rows, and a journal that redoes rows made but never written."""

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec

from pipeline.engine import shard_file, shard_task, shard_writer
from schemas import StoreLayout
from tests.trainer.conftest import _disc_sample


def _array(folder, name, compressors, filters=(), dtype="uint8", shape=(8, 4, 16, 16, 3), S=4):
    group = zarr.open_group(str(folder), mode="a", zarr_format=3)
    return group.create_array(name, shape=shape, chunks=(1, 1, *shape[2:]), shards=(S, *shape[1:]), dtype=dtype,
                              fill_value=0, filters=list(filters), compressors=list(compressors),
                              config={"write_empty_chunks": False})


BLOSC = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=3, blocksize=256 * 1024)


@pytest.mark.parametrize("compressors", [[BLOSC], [ZstdCodec(level=3)], [BLOSC, ZstdCodec(level=1)]])
def test_chunks_are_zarr_pythons_bytes_and_read_back(tmp_path, compressors):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (8, 4, 16, 16, 3), dtype=np.uint8)
    x[5, 2] = 0  # an all-fill chunk: not stored by either writer
    theirs, ours = _array(tmp_path, "theirs", compressors), _array(tmp_path, "ours", compressors)
    theirs[4:8] = x[4:8]
    spec = shard_file.ShardSpec.of(ours, tmp_path / "ours")
    assert spec is not None and spec.grid == (4, 4, 1, 1, 1)
    chunks = {}
    for r in range(4):
        chunks.update(spec.encode_row(r, x[4 + r]))
    stale = spec.path(1).with_name(f".{spec.path(1).name}.tmp99999")  # a writer killed mid-write
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"torn")
    spec.write(1, chunks)
    assert not stale.exists() and sorted(p.name for p in spec.path(1).parent.iterdir()) == ["0"]
    assert (1, 2, 0, 0, 0) not in chunks and len(chunks) == 15
    zarr_chunks = spec.unpack((tmp_path / "theirs" / "c" / "1" / "0" / "0" / "0" / "0").read_bytes())
    assert zarr_chunks == chunks  # every chunk byte for byte, the same absent one
    back = zarr.open_array(str(tmp_path / "ours"), mode="r")
    np.testing.assert_array_equal(back[4:8], x[4:8])
    np.testing.assert_array_equal(back[0:4], 0)  # no file for shard 0: fill


def test_float16_depth_and_bool_rows(tmp_path):
    d = _array(tmp_path, "d", [BloscCodec(cname="zstd", clevel=2, shuffle="shuffle")], dtype="float16",
               shape=(4, 3, 8, 8))
    b = _array(tmp_path, "b", [ZstdCodec(level=5)], dtype="bool", shape=(4, 3, 8, 8))
    rng = np.random.default_rng(1)
    dv = (rng.random((4, 3, 8, 8)) * 3).astype(np.float16)
    bv = rng.random((4, 3, 8, 8)) < 0.5
    for arr, val, name in ((d, dv, "d"), (b, bv, "b")):
        spec = shard_file.ShardSpec.of(arr, tmp_path / name)
        spec.write(0, {k: v for r in range(4) for k, v in spec.encode_row(r, val[r]).items()})
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / name))[:], val)


def test_shard_rows_keep_rows_already_written_and_drop_a_remade_rows_old_chunks(tmp_path):
    layout = StoreLayout(kind="objaverse", frames=3, resolution=16, layers=("object",), samples_per_shard=4)
    shard_writer.create_store(tmp_path / "s", layout, 2, {"title": "t"})
    rng = np.random.default_rng(2)
    samples = [_disc_sample(layout, rng) for _ in range(3)]
    first = shard_writer.ShardRows(tmp_path / "s", layout, 1)
    first.add([4, 5], samples[:2])
    assert first.nbytes > 0 and not (tmp_path / "s" / "rgb" / "c" / "1").exists()  # nothing on disk yet
    first.flush()
    samples[1]["rgb"][1] = 0  # row 5 made again (a --retry-failed run) with an empty frame
    again = shard_writer.ShardRows(tmp_path / "s", layout, 1)
    again.add([5, 6], samples[1:3])
    again.flush()
    rgb = zarr.open_array(str(tmp_path / "s" / "rgb"), mode="r")
    for row, s in zip((4, 5, 6), samples, strict=True):
        np.testing.assert_array_equal(rgb[row], s["rgb"])  # row 4 kept, row 5's old frame 1 gone
    with pytest.raises(ValueError, match="not in shard"):
        again.add([0], samples[:1])


def test_arrays_with_codecs_we_do_not_write_go_through_zarr(tmp_path, monkeypatch):
    arr = _array(tmp_path, "t", [BLOSC], filters=[TransposeCodec(order=(0, 1, 4, 2, 3))])
    assert shard_file.ShardSpec.of(arr, tmp_path / "t") is None
    plain = shard_writer.codecs_for  # a store whose image arrays carry a transpose (channels first)
    monkeypatch.setattr(shard_writer, "codecs_for", lambda codec, ndim: (
        ([TransposeCodec(order=(*range(ndim - 3), ndim - 1, ndim - 3, ndim - 2))], [BLOSC]) if codec == "image"
        else plain(codec, ndim)))
    layout = StoreLayout(kind="objaverse", frames=3, resolution=16, layers=("object",), samples_per_shard=2)
    shard_writer.create_store(tmp_path / "s", layout, 1, {"title": "t"})
    samples = [_disc_sample(layout, np.random.default_rng(3)) for _ in range(2)]
    shard_writer.write_samples(tmp_path / "s", layout, [0, 1], samples)
    rows = shard_writer.ShardRows(tmp_path / "s", layout, 0)
    assert rows.specs["rgb"] is None and rows.specs["mlo_normal"] is not None
    for name in ("rgb", "mlo_normal", "ref_views"):
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s" / name))[:2], [s[name] for s in samples])


def test_a_corrupt_index_is_an_error(tmp_path):
    arr = _array(tmp_path, "a", [BLOSC])
    spec = shard_file.ShardSpec.of(arr, tmp_path / "a")
    data = bytearray(spec.pack(spec.encode_row(0, np.ones((4, 16, 16, 3), np.uint8))))
    data[-10] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        spec.unpack(bytes(data))


def _journal(tmp_path, text):
    path = tmp_path / "j"
    path.write_text(text)
    return shard_task.read_journal(path)


def test_items_made_but_never_written_are_redone_without_suspicion(tmp_path):
    """A worker that dies after making items (rows in memory) but before they are ``flushed``:
    those items are made again; the one in flight when it died is the only suspect."""
    text = ('start {"key": "a", "t": 1}\nend {"key": "a", "ok": true, "rows": [0]}\nflushed {"keys": ["a"]}\n'
            'start {"key": "b", "t": 2}\nend {"key": "b", "ok": true, "rows": [1]}\n'
            'start {"key": "c", "t": 3}\nend {"key": "c", "ok": false, "rows": [2], "stage": "load"}\n')
    state = _journal(tmp_path, text + 'start {"key": "d", "t": 4}\n')
    assert set(state.ended) == {"a", "c"} and set(state.made) == {"b"}  # b's rows never reached the files
    assert state.dangling == ("d", 4.0)
    assert _journal(tmp_path, text).dangling is None  # died in the flush: nobody is poisoned


def test_a_redo_that_fails_is_not_turned_back_into_ok_by_a_later_flush(tmp_path):
    state = _journal(tmp_path, 'start {"key": "a", "t": 1}\nend {"key": "a", "ok": true, "rows": [0]}\n'
                               'start {"key": "b", "t": 2}\n'  # attempt 1 dies on b
                               'start {"key": "a", "t": 3}\nend {"key": "a", "ok": false, "rows": [0], "stage": "fetch"}\n'
                               'start {"key": "b", "t": 4}\nend {"key": "b", "ok": true, "rows": [1]}\n'
                               'flushed {"keys": ["b"]}\nstart {"key": "c", "t": 5}\n')
    assert state.ended["a"]["ok"] is False and state.ended["b"]["ok"] is True and state.dangling == ("c", 5.0)


def test_a_flush_writes_only_the_items_it_names(tmp_path):
    """Attempt 2 redoes a, flushes early and dies: b (made by attempt 1 only) is not on disk."""
    state = _journal(tmp_path, 'start {"key": "a", "t": 1}\nend {"key": "a", "ok": true, "rows": [0]}\n'
                               'start {"key": "b", "t": 2}\nend {"key": "b", "ok": true, "rows": [1]}\n'
                               'start {"key": "c", "t": 3}\n'
                               'start {"key": "a", "t": 4}\nend {"key": "a", "ok": true, "rows": [0]}\n'
                               'flushed {"keys": ["a"]}\n')
    assert set(state.ended) == {"a"} and "b" not in state.ended


def test_a_redo_in_flight_is_the_suspect_not_an_earlier_item(tmp_path):
    state = _journal(tmp_path, 'start {"key": "a", "t": 1}\nend {"key": "a", "ok": true, "rows": [0]}\n'
                               'start {"key": "b", "t": 2}\nstart {"key": "a", "t": 3}\ntimeout a\n')
    assert state.dangling == ("a", 3.0) and "a" in state.timed_out


def test_a_replaced_store_stops_the_flush(tmp_path):
    layout = StoreLayout(kind="objaverse", frames=3, resolution=16, layers=("object",), samples_per_shard=2)
    shard_writer.create_store(tmp_path / "s", layout, 1, {"title": "t"})
    rows = shard_writer.ShardRows(tmp_path / "s", layout, 0)
    rows.add([0], [_disc_sample(layout, np.random.default_rng(4))])
    assert rows.flush(check=lambda: False) is False
    assert not (tmp_path / "s" / "rgb" / "c").exists()
    import shutil

    shutil.rmtree(tmp_path / "s" / "rgb")
    with pytest.raises(FileNotFoundError, match="gone"):
        rows.flush()
    assert not (tmp_path / "s" / "rgb").exists()  # never recreated
