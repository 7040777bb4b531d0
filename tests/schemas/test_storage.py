"""The storage layer on a local folder and on a real S3-compatible server (moto's, on loopback):
the same contract for both, locks that keep two holders apart, and errors no retry fixes named in one line."""

from __future__ import annotations

import errno
import threading
import time

import pytest

from pipeline.errors import NoSpaceLeft, WriteRefused
from schemas import storage, storage_object
from schemas.storage import LocalLocation, ObjectLocation, open_location, storage_error


@pytest.fixture(params=["local", "s3"])
def loc(request, tmp_path):
    if request.param == "local":
        return open_location(tmp_path / "store.zarr")
    return open_location(request.getfixturevalue("s3_prefix") + "/store.zarr")


def test_urls_and_paths_open_the_right_location(tmp_path):
    assert isinstance(open_location(tmp_path), LocalLocation)
    assert isinstance(open_location(f"file://{tmp_path}"), LocalLocation)
    assert isinstance(open_location("s3://bucket/prefix/x.zarr"), ObjectLocation)
    assert isinstance(open_location("gs://bucket/x.zarr"), ObjectLocation)
    assert not storage.is_url("out/x.zarr") and not storage.is_url("/abs/x.zarr")


def test_write_read_list_delete_the_same_on_both(loc):
    assert loc.is_empty() and loc.read_json_or_none("manifest.json") is None
    with pytest.raises(FileNotFoundError):
        loc.read_bytes("nope")
    loc.write_bytes("_shards/0000001.json", b'{"a": 1}')
    loc.write_json("_shards/0000002.json", {"b": 2})
    loc.write_bytes("rgb/c/1/0/0/0", b"x" * 1000)
    loc.write_bytes("rgb/c/1/0/0/0", b"y" * 10)  # replaced whole
    assert loc.read_bytes("rgb/c/1/0/0/0") == b"y" * 10 and loc.read_range("rgb/c/1/0/0/0", 2, 5) == b"yyy"
    assert loc.read_json("_shards/0000002.json") == {"b": 2} and loc.exists("_shards/0000001.json")
    assert loc.list("_shards") == {"_shards/0000001.json": 8, "_shards/0000002.json": 8}
    assert loc.list("") == {"_shards/0000001.json": 8, "_shards/0000002.json": 8, "rgb/c/1/0/0/0": 10}
    many = [f"_shards/{k:07d}.json" for k in (2, 3, 1, 2, 1)]
    assert loc.read_many(many) == [b'{"b": 2}', None, b'{"a": 1}', b'{"b": 2}', b'{"a": 1}']
    assert loc.create("lockish", b"first") and not loc.create("lockish", b"second")
    assert loc.read_bytes("lockish") == b"first"
    loc.delete("lockish")
    loc.delete("lockish")  # absent: no error
    assert not loc.exists("lockish") and not loc.is_empty()
    loc.remove_all()
    assert loc.is_empty() and loc.list("") == {}


def test_a_local_write_leaves_no_temp_file_and_sweeps_a_killed_writers(tmp_path):
    loc = open_location(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".f.tmp999-1").write_bytes(b"torn")  # a writer killed mid-write
    loc.write_bytes("a/f", b"data", sweep=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["f"]


def test_a_lock_keeps_a_second_holder_waiting_until_the_first_lets_go(loc):
    order = []
    with loc.lock("_journal/0000000/lock", wait_s=30) as held:
        assert held()

        def second():
            with loc.lock("_journal/0000000/lock", wait_s=30):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(1.5)
        order.append("first done")
    t.join(30)
    assert order == ["first done", "second"]


def test_a_lease_whose_holder_stopped_renewing_is_taken_over_and_the_holder_knows(s3_prefix, monkeypatch):
    monkeypatch.setattr(storage_object, "LEASE_RENEW_S", 0.3)
    monkeypatch.setattr(storage_object, "LEASE_STALE_S", 1.0)
    loc = open_location(s3_prefix)
    import obstore

    # a holder that died: its lease object stays, never renewed
    obstore.put(loc.store, "lock", b'{"holder": "dead"}', mode="create")
    t0 = time.monotonic()
    with loc.lock("lock", wait_s=20) as held:
        assert 1.0 <= time.monotonic() - t0 < 10 and held()
        # someone else now takes it over behind our back: our renewal fails, held() turns False
        obstore.put(loc.store, "lock", b'{"holder": "thief"}')
        time.sleep(1.0)
        assert not held()
    assert loc.read_bytes("lock") == b'{"holder": "thief"}'  # a lost lease is not deleted by its old holder
    with pytest.raises(RuntimeError, match="too long"):
        with loc.lock("lock", wait_s=0.5):
            pass


def test_a_full_device_reads_as_one_line_naming_the_output():
    with pytest.raises(OSError) as e, open("/dev/full", "wb") as f:  # a real ENOSPC from the kernel
        f.write(b"x" * 65536)
        f.flush()
    mapped = storage_error(e.value, "out/objaverse.zarr")
    assert isinstance(mapped, NoSpaceLeft) and str(mapped).startswith("no space left on the device holding "
                                                                      "out/objaverse.zarr;")
    assert "\n" not in str(mapped)
    for code, what in ((errno.EDQUOT, NoSpaceLeft), (errno.EACCES, WriteRefused), (errno.EROFS, WriteRefused)):
        assert isinstance(storage_error(OSError(code, "x"), "OUT"), what)
    assert storage_error(ValueError("unrelated"), "OUT") is None


def test_a_bucket_that_refuses_writes_reads_as_one_line(monkeypatch):
    from pipeline.errors import UserError
    from schemas.reader import StoreReader
    from tests.s3_server import LocalS3

    # a server that checks credentials after its first request (the bucket's creation): ours are unknown to it
    with LocalS3(server_env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as server:
        server.make_bucket("locked")
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        loc = open_location("s3://locked/x.zarr")
        with pytest.raises(WriteRefused, match=r"^the bucket holding s3://locked/x.zarr refuses writes: access denied"):
            loc.write_bytes("manifest.json", b"{}")
        with pytest.raises(UserError, match=r"^cannot read s3://locked/x.zarr: access denied"):
            StoreReader("s3://locked/x.zarr")
    monkeypatch.undo()
    missing = open_location("s3://no-such-bucket-here/x.zarr")
    with pytest.raises(WriteRefused, match="bucket does not exist"):
        missing.write_bytes("manifest.json", b"{}")
