"""Stores on object storage for real: a local S3-compatible server (moto's, on loopback), the real
runner on the real local Ray cluster, workers killed from outside, the real reader and trainer.

What a lab does on a cloud cluster, shrunk: render into ``s3://bucket/prefix/x.zarr`` with two
workers while a worker is SIGKILLed mid-item (once: the item is redone; twice: it is recorded as
poisoned), resume with ``--retry-failed``, read every sample back bit-identical to the same job
rendered into a local folder, and train a few tiny steps straight from the bucket.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.engine import runner, shard_writer
from schemas import index as sample_index
from schemas.reader import StoreReader
from schemas.storage import open_location
from tests.pipeline.engine.test_worker_loss import _chaos_job, run_killing


def _same_store_contents(a: StoreReader, b: StoreReader) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        assert a.key(i) == b.key(i) and a.attrs(i) == b.attrs(i)
        sa, sb = a.read(i), b.read(i)
        for name in sa:
            np.testing.assert_array_equal(sa[name], sb[name], err_msg=f"{a.key(i)} {name}")


def test_a_worker_killed_mid_item_loses_nothing_and_the_bucket_store_reads_back_identical(ray_cluster, tmp_path,
                                                                                         s3_prefix):
    url = f"{s3_prefix}/objaverse.zarr"
    # shards [cube, mug] [torus, globe] [lamp]: the globe's worker is SIGKILLed once mid-item
    job, folder = _chaos_job(tmp_path, {"builtin-globe": "await-kill:1"}, 5, samples_per_shard=2)
    job = dataclasses.replace(job, out=url)
    summary, killed = run_killing(job, folder, workers=2, timeout_s=60, max_retries=4)
    assert len(killed) == 1 and (summary.items_ok, summary.items_failed) == (5, 0)
    loc = open_location(url)
    keys = set(loc.list(""))
    # markers list apart from journals; the journals and the index are in the bucket; no lease left behind
    assert {k for k in keys if k.startswith("_shards/")} == {f"_shards/{k:07d}.json" for k in range(3)}
    assert not any(k.endswith("/lock") for k in keys) and "_index/index.json" in keys
    globe = "".join(loc.read_bytes(k).decode() for k in sorted(keys)
                    if k.startswith("_journal/0000001/") and k.endswith(".log"))
    assert globe.count('start {"key": "builtin-globe"') == 2  # killed mid-item; the retry resumed from the journal
    for m in shard_writer.read_markers(url):  # every shard file is recorded in its marker
        assert set(m["files"]) == {a.name for a in StoreReader(url).layout.arrays}

    # exactly once, and the same bytes as the same job rendered into a local folder
    reader = StoreReader(url)
    assert sorted(reader.key(i) for i in range(len(reader))) == sorted(i.key for i in job.items)
    local_job = dataclasses.replace(job, out=tmp_path / "local.zarr", options={**job.options, "chaos": {}})
    runner.run(local_job, workers=2, progress=False)
    _same_store_contents(reader, StoreReader(tmp_path / "local.zarr"))

    # the trainer's loader reads batches from the bucket (spawned workers open their own client)
    from trainer.config import load_config
    from trainer.data import REMOTE_PREFETCH, MixedStores, make_loader

    cfg = load_config("tiny", overrides=dict(stores=[url], split="all"))
    loader = make_loader(MixedStores([url], cfg), batch_size=2, num_workers=1)
    assert loader.prefetch_factor == REMOTE_PREFETCH
    batch = next(iter(loader))
    assert batch["rgb"].shape[0] == 2 and batch["rgb"].float().std() > 0


@pytest.mark.slow
def test_a_poisoned_item_is_recorded_redone_by_retry_failed_and_a_tiny_run_trains_from_the_bucket(
        ray_cluster, tmp_path, s3_prefix):
    url = f"{s3_prefix}/objaverse.zarr"
    # the mug's worker is killed twice: poisoned (recorded), then redone by --retry-failed
    job, folder = _chaos_job(tmp_path, {"builtin-striped_mug": "await-kill:2"}, 5, samples_per_shard=2)
    job = dataclasses.replace(job, out=url)
    first, killed = run_killing(job, folder, workers=2, timeout_s=60, max_retries=4)
    assert [(f["key"], f["stage"]) for f in first.failures] == [("builtin-striped_mug", "worker")]
    assert len(StoreReader(url)) == 4
    second = runner.run(job, workers=2, timeout_s=60, progress=False, retry_failed=[])
    assert (second.items_ok, second.items_failed, second.items_skipped) == (1, 0, 4) and second.failures == []
    reader = StoreReader(url)
    assert sorted(reader.key(i) for i in range(len(reader))) == sorted(i.key for i in job.items)
    local_job = dataclasses.replace(job, out=tmp_path / "local.zarr", options={**job.options, "chaos": {}})
    runner.run(local_job, workers=2, progress=False)
    _same_store_contents(reader, StoreReader(tmp_path / "local.zarr"))

    from trainer.config import load_config
    from trainer.train import train

    cfg = load_config("tiny", overrides=dict(stores=[url], run_dir=str(tmp_path / "run"), log_every=1,
                                             ckpt_every=0, val_every=0, split="all"))
    result = train(cfg, "stage1", max_steps=2)
    assert result["step"] == 2 and all(np.isfinite(result["losses"]))


def test_two_drivers_on_one_bucket_store_never_work_on_a_shard_at_once(ray_cluster, tmp_path, s3_prefix):
    """A second run of the same job while the first holds its shards: each shard is done once (the
    second waits on the shard's lease, then finds its marker)."""
    import threading

    from tests.pipeline.helpers import small_job

    url = f"{s3_prefix}/two.zarr"
    job, _ = small_job(url, limit=2, samples_per_shard=1)
    results = []
    first = threading.Thread(target=lambda: results.append(runner.run(job, workers=1, progress=False)))
    first.start()
    loc = open_location(url)
    while not loc.exists("manifest.json"):
        pass
    second = runner.run(job, workers=1, progress=False)
    first.join(120)
    done = [r for r in (results[0], second)]
    assert sum(r.items_ok for r in done) >= 2 and all(r.items_failed == 0 for r in done)
    reader = StoreReader(url)
    assert sorted(reader.key(i) for i in range(len(reader))) == sorted(i.key for i in job.items)
    markers = shard_writer.read_markers(url)
    assert len(markers) == 2 and all(len(m["items"]) == 1 for m in markers)
    assert sample_index.is_current(url, shard_writer.read_manifest(url)["nonce"])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_missing_or_damaged_shard_file_is_reported_not_served_and_redone(ray_cluster, tmp_path, where,
                                                                           request):
    from tests.pipeline.helpers import small_job

    out = tmp_path / "s.zarr" if where == "local" else request.getfixturevalue("s3_prefix") + "/s.zarr"
    job, _ = small_job(out, limit=3, samples_per_shard=1)
    runner.run(job, workers=2, progress=False)
    before = StoreReader(out)
    good = {before.key(i): before.read(i) for i in range(len(before))}
    loc = open_location(out)
    spec_key = sample_index.shard_file_keys(loc)
    loc.delete(spec_key["rgb"](1))                                         # lost
    loc.write_bytes(spec_key["mlo_depth"](2), loc.read_bytes(spec_key["mlo_depth"](2))[:-7])  # truncated
    from pipeline.inspection.inspect_store import format_report, inspect

    report = inspect(out)
    assert [(c["shard"], c["reason"].split(" ")[0]) for c in report["corrupt_shards"]] == [(1, "rgb"), (2, "mlo_depth")]
    assert "corrupt shards: 2" in format_report(report)
    # the index built at the end of the next run (here a rerun with nothing to do: it rebuilds a stale
    # one) leaves them out; --retry-failed redoes them whole
    sample_index.invalidate(out)
    assert runner.run(job, workers=2, progress=False).shards_run == 0
    reader = StoreReader(out)
    assert len(reader) == 1 and [c["shard"] for c in reader.corrupt()] == [1, 2]
    redo = runner.run(job, workers=2, progress=False, retry_failed=["worker"])  # any stage: corrupt shards are redone
    assert redo.shards_run == 2 and redo.items_ok == 2
    after = StoreReader(out)
    assert after.corrupt() == [] and inspect(out)["corrupt_shards"] == []
    assert sorted(after.key(i) for i in range(len(after))) == sorted(good)
    for i in range(len(after)):
        for name, arr in good[after.key(i)].items():
            np.testing.assert_array_equal(after.read(i)[name], arr, err_msg=name)


def test_the_store_tools_take_bucket_urls_and_say_what_is_wrong_in_one_line(tmp_path, s3_prefix):
    from tests.test_cli import cli
    from tests.trainer.conftest import write_hoi_store

    url = f"{s3_prefix}/hoi.zarr"
    write_hoi_store(url, ("object", "left_palm"), n=2)
    r = cli("inspect", url, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["samples"] == 2 and report["store"] == url and report["arrays"]["rgb"]["bytes"] > 0
    r = cli("export-sample", url, 1, tmp_path / "s.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "s.npz") as z:
        np.testing.assert_array_equal(z["rgb"], StoreReader(url).read(1)["rgb"])
    r = cli("inspect", "s3://no-such-bucket-here/x.zarr")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no-such-bucket-here" in r.stderr
    r = cli("render-objaverse", "--source", "builtin", "--out", "s3://no-such-bucket-here/x.zarr", "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "bucket does not exist" in r.stderr
