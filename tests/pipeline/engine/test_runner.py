"""The Ray layer on a real local cluster: stores, failures, crashes, timeouts, resume."""

import dataclasses
import json

import numpy as np
import pytest

from pipeline.assets.mesh_io import load_object
from pipeline.engine import runner
from pipeline.objaverse.sample import render_object
from pipeline.objaverse.sources.builtin import builtin_uids
from pipeline.render.workers import worker_renderers
from schemas import validate_sample
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job


def test_builtin_store_round_trip(ray_cluster, tmp_path, builtin_dir):
    job, cfg = small_job(tmp_path / "s.zarr")
    summary = runner.run(job, workers=2, progress=False)
    assert summary.items_ok == 5 and summary.items_failed == 0 and summary.samples_ok == 5
    reader = StoreReader(tmp_path / "s.zarr")
    assert len(reader) == 5 and reader.layout.layers == ("object",)
    assert sorted(reader.key(i) for i in range(5)) == sorted(builtin_uids())
    for i in range(5):
        sample = reader.read(i)
        validate_sample(reader.layout, sample)
        assert sample["layer_present"].all()
        assert (sample["mlo_depth"] > 0).mean() > 0.02
    # what the workers wrote equals rendering the object here (deterministic, lossless)
    i = [reader.key(j) for j in range(5)].index("builtin-globe")
    obj = load_object("builtin-globe", builtin_dir / "builtin-globe.glb", 64, 10**6, 2048)
    direct = render_object(obj, cfg, worker_renderers(cfg.resolution, cfg.yfov_deg))[0]
    stored = reader.read(i)
    for name in ("mlo_normal", "mlo_depth", "points", "obj_rot", "obj_trans", "background"):
        np.testing.assert_array_equal(stored[name], direct[name], err_msg=name)
    for name in ("rgb", "ref_views"):  # pyrender MSAA on llvmpipe: rare 1/255 flips
        diff = np.abs(stored[name].astype(int) - direct[name])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, name
    # frame windows read only the frames asked for
    part = reader.read(i, names=["rgb", "mlo_depth", "K"], frames=slice(1, 3))
    assert part["rgb"].shape[0] == 2 and part["K"].shape == (3, 3)
    np.testing.assert_array_equal(part["mlo_depth"], stored["mlo_depth"][1:3])


def test_bad_objects_are_recorded_and_the_run_goes_on(ray_cluster, tmp_path, builtin_dir):
    src = tmp_path / "meshes"
    src.mkdir()
    for name in ("builtin-checker_cube.glb", "builtin-pbr_torus.glb"):
        (src / name).write_bytes((builtin_dir / name).read_bytes())
    (src / "broken.glb").write_bytes(b"not a glb at all")
    (src / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    job, _ = small_job(tmp_path / "s.zarr", source=str(src))
    summary = runner.run(job, workers=2, progress=False)
    assert (summary.items_ok, summary.items_failed) == (2, 2)
    failures = {f["key"]: f for f in map(json.loads, (tmp_path / "s.zarr" / "failures.jsonl").read_text().splitlines())}
    assert failures["broken.glb"]["stage"] == "load"
    assert failures["flat.obj"]["stage"] == "validate"
    reader = StoreReader(tmp_path / "s.zarr")
    assert len(reader) == 2 and {f["key"] for f in reader.failures()} == {"broken.glb", "flat.obj"}
    assert "failures" in summary.format() and "broken.glb" not in [reader.key(i) for i in range(2)]


def test_worker_crash_and_hang_are_recorded_and_do_not_stop_the_run(ray_cluster, tmp_path):
    job, _ = small_job(tmp_path / "s.zarr", samples_per_shard=5)  # all five objects in one task
    job = dataclasses.replace(job, step="tests.pipeline.chaos_step:chaos_step", options={
        **job.options, "chaos": {"builtin-globe": "segfault", "builtin-pbr_torus": "hang",
                                 "builtin-desk_lamp": "raise"}})
    summary = runner.run(job, workers=1, timeout_s=6, max_retries=4, progress=False)
    by_key = {f["key"]: f for f in summary.failures}
    assert by_key["builtin-globe"]["stage"] == "worker"
    assert by_key["builtin-pbr_torus"]["stage"] == "timeout"
    assert by_key["builtin-desk_lamp"]["stage"] == "error"
    assert "\n" not in by_key["builtin-desk_lamp"]["reason"]
    reader = StoreReader(tmp_path / "s.zarr")
    assert sorted(reader.key(i) for i in range(len(reader))) == ["builtin-checker_cube", "builtin-striped_mug"]


def test_samples_a_step_skips_get_no_row_and_are_counted(ray_cluster, tmp_path):
    """A step may return ``Skipped(reason)`` in place of a planned sample: no row is written for it,
    readers never see it, the item stays ok and the summary counts the skipped samples by reason."""
    job, _ = small_job(tmp_path / "s.zarr", clips_per_object=2, samples_per_shard=4)
    job = dataclasses.replace(job, step="tests.pipeline.chaos_step:chaos_step",
                              options={**job.options, "chaos": {"builtin-globe": "skip-first"}})
    summary = runner.run(job, workers=1, progress=False)
    assert summary.samples_skipped == {"refused by the test": 1} and not summary.failures
    assert "skipped        1 samples not written: 1 x refused by the test" in summary.format()
    reader = StoreReader(tmp_path / "s.zarr")
    keys = [reader.key(i) for i in range(len(reader))]
    assert len(reader) == 2 * 5 - 1 and keys.count("builtin-globe") == 1 and keys.count("builtin-checker_cube") == 2
    # the globe's kept sample is its second clip (row): the first row was never written
    i = keys.index("builtin-globe")
    assert reader.row(i) % 2 == 1
    validate_sample(reader.layout, reader.read(i))


def test_rerun_skips_completed_shards_and_refuses_other_arguments(ray_cluster, tmp_path):
    job, _ = small_job(tmp_path / "s.zarr")
    first = runner.run(job, workers=2, progress=False)
    markers = sorted((tmp_path / "s.zarr" / "_shards").glob("*.json"))
    mtimes = [m.stat().st_mtime_ns for m in markers]
    again = runner.run(job, workers=2, progress=False)
    assert again.shards_run == 0 and again.items_skipped == first.items_total == 5
    assert [m.stat().st_mtime_ns for m in markers] == mtimes
    other, _ = small_job(tmp_path / "s.zarr", seed=7)
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="other arguments"):
        runner.run(other, workers=2, progress=False)


def test_plan_never_splits_an_item_across_shards():
    from pipeline.engine.shard_writer import plan_shards

    assert plan_shards([2, 2, 1, 3, 1], 4) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        plan_shards([5], 4)


def test_out_folders_that_are_not_our_stores_are_never_replaced(tmp_path):
    from pipeline.errors import UserError

    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    for out in (precious, other):
        job, _ = small_job(out)
        for overwrite in (False, True):
            with pytest.raises(UserError, match="not a manivideo store"):
                runner.run(job, workers=1, progress=False, overwrite=overwrite)
    assert (precious / "keep.txt").read_text() == "mine" and sorted(p.name for p in other.iterdir()) == ["zarr.json"]
    with pytest.raises(UserError, match="--limit"):
        small_job(tmp_path / "x.zarr", limit=0)


def test_duplicate_item_keys_are_refused(tmp_path):
    from pipeline.errors import UserError

    job, _ = small_job(tmp_path / "s.zarr")
    job = dataclasses.replace(job, items=job.items + job.items[:1])
    with pytest.raises(UserError, match="more than once"):
        runner.run(job, workers=1, progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_a_finished_shard_is_not_redone_by_a_late_attempt(ray_cluster, tmp_path):
    from pipeline.engine import shard_writer
    from pipeline.engine.shard_task import process_shard

    job, _ = small_job(tmp_path / "s.zarr", samples_per_shard=5)
    runner.run(job, workers=1, progress=False)
    marker = shard_writer.marker_path(tmp_path / "s.zarr", 0)
    before = marker.read_text()
    nonce = shard_writer.read_manifest(tmp_path / "s.zarr")["nonce"]
    entries = list(zip(job.items, [[i] for i in range(5)], strict=True))
    again = process_shard(str(tmp_path / "s.zarr"), job.layout.to_attrs(), 0, entries, job.step, job.options, 60, nonce)
    assert marker.read_text() == before and [r["key"] for r in again["items"]] == [i.key for i in job.items]
    stale = process_shard(str(tmp_path / "s.zarr"), job.layout.to_attrs(), 0, entries, job.step, job.options, 60,
                          "another-store")
    assert stale.get("stale") and marker.read_text() == before
