"""Objaverse-XL through the real ``objaverse.xl`` package, against a cache pre-filled in XL's own
layout (one parquet of annotations per source, each source's own object folders)."""

import gzip
import hashlib
import json
import shutil
import time

import pandas as pd
import pytest
import trimesh

from pipeline.engine import runner
from pipeline.errors import UserError
from pipeline.objaverse.sources import objaverse_source, objaverse_xl
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job

SKETCHFAB_UID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
IDS = {
    "sketchfab": f"https://sketchfab.com/3d-models/{SKETCHFAB_UID}",
    "smithsonian": "https://3d-api.si.edu/content/document/3d_package:d8c62e3f/model-draco.glb",
    "thingiverse": "https://www.thingiverse.com/thing:1234/files?fileId=5678",
    "github": "https://github.com/someorg/somerepo/blob/0123456789abcdef0123456789abcdef01234567/models/chair.obj",
}
FBX = "https://github.com/someorg/somerepo/blob/0123456789abcdef0123456789abcdef01234567/models/rig.fbx"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def xl_cache(tmp_path, builtin_dir):
    """~/.objaverse as objaverse.xl lays it out, with one object per source already downloaded."""
    from objaverse.utils import get_uid_from_str

    from tests.pipeline.assets.test_gltf_ext import draco_glb

    root = tmp_path / "objaverse"
    files = {
        "sketchfab": root / f"hf-objaverse-v1/glbs/000-000/{SKETCHFAB_UID}.glb",
        "smithsonian": root / f"smithsonian/objects/{get_uid_from_str(IDS['smithsonian'])}.glb",
        "thingiverse": root / "thingiverse/thing-1234-file-5678.stl",
        "github": root / "github/repos/someorg/somerepo/models/chair.obj",
    }
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(builtin_dir / "builtin-checker_cube.glb", files["sketchfab"])
    sphere = trimesh.creation.icosphere(subdivisions=2)
    files["smithsonian"].write_bytes(draco_glb(sphere, sphere.vertices[:, :2] * 0.5 + 0.5)[0])  # Draco, as SI's
    trimesh.creation.cylinder(radius=0.3, height=1.0).export(files["thingiverse"])
    trimesh.creation.box(extents=(1, 0.5, 0.8)).export(files["github"])
    with gzip.open(root / "hf-objaverse-v1/object-paths.json.gz", "wt") as f:
        json.dump({SKETCHFAB_UID: f"glbs/000-000/{SKETCHFAB_UID}.glb"}, f)
    with gzip.open(root / "hf-objaverse-v1/lvis-annotations.json.gz", "wt") as f:
        json.dump({"toy": [SKETCHFAB_UID]}, f)
    licenses = {"sketchfab": "by", "smithsonian": "CC0", "thingiverse": "by-sa", "github": "MIT"}
    types = {"sketchfab": "glb", "smithsonian": "glb", "thingiverse": "stl", "github": "obj"}
    for src, fid in IDS.items():
        rows = [{"fileIdentifier": fid, "source": src, "license": licenses[src], "fileType": types[src],
                 "sha256": _sha(files[src]), "metadata": "{}"}]
        if src == "github":
            rows.append({"fileIdentifier": FBX, "source": src, "license": "MIT", "fileType": "fbx",
                         "sha256": "0" * 64, "metadata": "{}"})
        (root / src).mkdir(exist_ok=True)
        pd.DataFrame(rows).to_parquet(root / src / f"{src}.parquet")
    return root


def _keys(items):
    return sorted(k for k, _ in items)


def test_selection_by_source_license_lvis_and_identifier_file(xl_cache, tmp_path):
    items, notes = objaverse_xl.list_objects(xl_cache)
    assert _keys(items) == sorted(IDS.values())  # the .fbx is not selected ...
    assert any("fbx 1" in n for n in notes)  # ... and the summary says so
    assert _keys(objaverse_xl.list_objects(xl_cache, sources=["thingiverse", "github"])[0]) == sorted(
        [IDS["thingiverse"], IDS["github"]])
    assert _keys(objaverse_xl.list_objects(xl_cache, licenses=["CC0", "MIT"])[0]) == sorted(
        [IDS["smithsonian"], IDS["github"]])
    assert _keys(objaverse_xl.list_objects(xl_cache, lvis=["toy"])[0]) == [IDS["sketchfab"]]
    f = tmp_path / "ids.txt"
    f.write_text(f"{IDS['github']}\n{SKETCHFAB_UID}.glb\n\n")  # an XL identifier and an Objaverse 1.0 uid
    assert _keys(objaverse_xl.list_objects(xl_cache, ids_file=str(f))[0]) == sorted([IDS["github"], IDS["sketchfab"]])
    assert len(objaverse_xl.list_objects(xl_cache, limit=2)[0]) == 2
    for kw, msg in ((dict(sources=["myspace"]), "--xl-source"), (dict(licenses=["GPL-9"]), "--license"),
                    (dict(lvis=["spaceship"]), "LVIS")):
        with pytest.raises(UserError, match=msg):
            objaverse_xl.list_objects(xl_cache, **kw)
    f.write_text("https://github.com/nobody/nothing/blob/0/x.obj\n")
    with pytest.raises(UserError, match="not in the selected"):
        objaverse_xl.list_objects(xl_cache, ids_file=str(f))


def test_each_source_is_fetched_from_its_own_layout_through_the_package(xl_cache):
    items, _ = objaverse_xl.list_objects(xl_cache)
    paths = {json.loads(loc)["source"]: objaverse_xl.fetch(loc, str(xl_cache)) for _, loc in items}
    assert paths["sketchfab"] == xl_cache / f"hf-objaverse-v1/glbs/000-000/{SKETCHFAB_UID}.glb"
    assert paths["smithsonian"].parent == xl_cache / "smithsonian/objects"
    assert paths["thingiverse"] == xl_cache / "thingiverse/thing-1234-file-5678.stl"
    assert paths["github"] == xl_cache / "github/repos/someorg/somerepo/models/chair.obj"
    assert all(p.is_file() for p in paths.values())


def test_render_objaverse_xl_from_the_cache(ray_cluster, xl_cache, tmp_path):
    job, _ = small_job(tmp_path / "x.zarr", source="objaverse-xl", cache_dir=str(xl_cache))
    summary = runner.run(job, workers=2, progress=False)
    assert (summary.items_ok, summary.items_failed) == (4, 0), summary.failures
    assert any("fbx" in n for n in summary.notes)
    reader = StoreReader(tmp_path / "x.zarr")
    assert sorted(reader.key(i) for i in range(len(reader))) == sorted(IDS.values())
    smithsonian = [i for i in range(len(reader)) if reader.key(i) == IDS["smithsonian"]][0]
    assert max(reader.attrs(smithsonian)["coverage_refs"]) > 0.2  # the Draco sphere decoded and rendered


def test_offline_without_cache_fails_fast_naming_source(tmp_path):
    if objaverse_source.hub_reachable(timeout=2):
        pytest.skip("this machine can reach the hub; the offline message cannot be shown")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="--source") as e:
        objaverse_xl.list_objects(tmp_path / "empty", sources=["smithsonian"])
    assert time.perf_counter() - t0 < 10 and "\n" not in str(e.value) and "smithsonian" in str(e.value)
    assert not (tmp_path / "empty").exists()
