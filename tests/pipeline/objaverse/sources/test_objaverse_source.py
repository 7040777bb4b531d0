"""The objaverse source through the real ``objaverse`` package, against a pre-filled cache."""

import gzip
import json
import shutil
import time

import pytest

from pipeline.engine import runner
from pipeline.errors import UserError
from pipeline.objaverse.sources import objaverse_source
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job

UIDS = {"0a1b2c3d4e5f60718293a4b5c6d7e8f9": "builtin-checker_cube",
        "1f2e3d4c5b6a79881726354453627180": "builtin-striped_mug",
        "2b3c4d5e6f708192a3b4c5d6e7f80910": "builtin-pbr_torus"}


@pytest.fixture
def cache(tmp_path, builtin_dir):
    """A cache laid out as the objaverse package writes it: object-paths, LVIS, glbs/<dir>/<uid>.glb."""
    root = tmp_path / "hf-objaverse-v1"
    paths = {}
    for i, (uid, name) in enumerate(UIDS.items()):
        rel = f"glbs/000-{i:03d}/{uid}.glb"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(builtin_dir / f"{name}.glb", root / rel)
        paths[uid] = rel
    with gzip.open(root / "object-paths.json.gz", "wt") as f:
        json.dump(paths, f)
    uids = list(UIDS)
    with gzip.open(root / "lvis-annotations.json.gz", "wt") as f:
        json.dump({"mug": [uids[1]], "toy": [uids[0], uids[2]]}, f)
    return root


def test_listing_by_lvis_uid_file_and_limit(cache, tmp_path):
    assert objaverse_source.list_uids(cache) == sorted(UIDS)
    assert objaverse_source.list_uids(cache, lvis=["toy"]) == sorted([list(UIDS)[0], list(UIDS)[2]])
    assert objaverse_source.list_uids(cache, limit=2) == sorted(UIDS)[:2]
    f = tmp_path / "uids.txt"
    f.write_text(list(UIDS)[1] + ".glb\n\n")
    assert objaverse_source.list_uids(cache, uids_file=str(f)) == [list(UIDS)[1]]
    with pytest.raises(UserError, match="LVIS category"):
        objaverse_source.list_uids(cache, lvis=["spaceship"])
    f.write_text("ffffffffffffffffffffffffffffffff\n")
    with pytest.raises(UserError, match="not in Objaverse"):
        objaverse_source.list_uids(cache, uids_file=str(f))


def test_fetch_returns_the_cached_file_through_the_package(cache):
    uid = list(UIDS)[2]
    path = objaverse_source.fetch(uid, str(cache))
    assert path == cache / f"glbs/000-002/{uid}.glb" and path.exists()


def test_render_objaverse_from_the_cache(ray_cluster, cache, tmp_path):
    job, _ = small_job(tmp_path / "o.zarr", source="objaverse", cache_dir=str(cache), lvis=["toy"])
    summary = runner.run(job, workers=2, progress=False)
    assert summary.items_ok == 2
    reader = StoreReader(tmp_path / "o.zarr")
    assert sorted(reader.key(i) for i in range(len(reader))) == sorted([list(UIDS)[0], list(UIDS)[2]])


def test_no_network_and_no_cache_fails_fast_pointing_to_source(tmp_path):
    if objaverse_source.hub_reachable(timeout=2):
        pytest.skip("this machine can reach the hub; the offline message cannot be shown")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="--source") as e:
        objaverse_source.list_uids(tmp_path / "empty-cache")
    assert time.perf_counter() - t0 < 10 and "\n" not in str(e.value)
    assert not (tmp_path / "empty-cache").exists()
