"""Downloads for real, from a mirror on loopback HTTP: Objaverse 1.0 (our download of the
package's URL layout, the package's metadata readers) and Objaverse-XL (the package's own
downloader, a shard at a time). Each object is fetched once, into the package's cache layout."""

import gzip
import hashlib
import http.server
import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.engine import runner
from pipeline.objaverse.sources import objaverse_source, objaverse_xl
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job

NAMES = ["builtin-checker_cube", "builtin-striped_mug", "builtin-pbr_torus", "builtin-globe"]
UIDS = [f"{i:x}" * 32 for i in range(1, 5)]
MISSING = "f" * 32  # listed in object-paths.json.gz, absent from the mirror


class Mirror(http.server.ThreadingHTTPServer):
    """A static HTTP server on 127.0.0.1 over ``root`` that logs the paths it was asked for."""

    def __init__(self, root: Path, hang: frozenset = frozenset()):
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):  # noqa: N802
                mirror.requests.append(self.path)
                if self.path in hang:  # a server that accepts and never answers
                    time.sleep(60)
                    return
                super().do_GET()

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def hf_mirror(tmp_path, builtin_dir):
    """The Hugging Face repo's layout (object-paths.json.gz, glbs/<dir>/<uid>.glb), served on loopback."""
    root = tmp_path / "mirror"
    paths = {}
    for i, (uid, name) in enumerate(zip(UIDS, NAMES, strict=True)):
        rel = f"glbs/000-{i % 2:03d}/{uid}.glb"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(builtin_dir / f"{name}.glb", root / rel)
        paths[uid] = rel
    paths[MISSING] = f"glbs/000-001/{MISSING}.glb"
    with gzip.open(root / "object-paths.json.gz", "wt") as f:
        json.dump(paths, f)
    server = Mirror(root)
    yield server
    server.shutdown()


def test_objects_download_once_per_object_into_the_packages_layout(ray_cluster, hf_mirror, tmp_path):
    import objaverse

    cache = tmp_path / "cache" / "hf-objaverse-v1"
    job, _ = small_job(tmp_path / "o.zarr", source="objaverse", cache_dir=str(cache), mirror=hf_mirror.url,
                       samples_per_shard=2)
    assert [i.locator for i in job.items][:1] == ["glbs/000-000/" + UIDS[0] + ".glb"]  # items carry their path
    assert "mirror" not in job.options and job.run_options == {"mirror": hf_mirror.url}
    summary = runner.run(job, workers=2, progress=False)
    assert (summary.items_ok, summary.items_failed) == (4, 1)
    [missing] = summary.failures
    assert (missing["key"], missing["stage"]) == (MISSING, "fetch") and "missing" in missing["reason"]
    objects = sorted(p for p in hf_mirror.requests if p.endswith(".glb"))
    assert hf_mirror.requests[0] == "/object-paths.json.gz" and hf_mirror.requests.count("/object-paths.json.gz") == 1
    # each object once (the missing one twice: its shard's prefetch, then the item's own try)
    found = sorted(f"/glbs/000-{i % 2:03d}/{uid}.glb" for i, uid in enumerate(UIDS))
    assert sorted(p for p in objects if MISSING not in p) == found
    assert objects.count(f"/glbs/000-001/{MISSING}.glb") == 2
    reader = StoreReader(tmp_path / "o.zarr")
    assert sorted(reader.key(i) for i in range(len(reader))) == sorted(UIDS)
    # the package finds what we downloaded, with no network
    objaverse_source.use_cache_dir(cache)
    assert objaverse.load_objects([UIDS[2]]) == {UIDS[2]: str(cache / f"glbs/000-000/{UIDS[2]}.glb")}
    assert not list(cache.rglob("*.tmp*"))
    # a second store from the same cache downloads nothing
    before = len(hf_mirror.requests)
    job2, _ = small_job(tmp_path / "o2.zarr", source="objaverse", cache_dir=str(cache), mirror=hf_mirror.url,
                        limit=4)
    assert runner.run(job2, workers=2, progress=False).items_ok == 4 and len(hf_mirror.requests) == before


@pytest.fixture
def xl_mirror(request, tmp_path, builtin_dir):
    """Smithsonian objects whose identifiers (their download URLs, as in Objaverse-XL) point at
    loopback; ``@pytest.mark.parametrize("xl_mirror", [paths], indirect=True)``: these never answer."""
    root = tmp_path / "si"
    root.mkdir()
    for name in NAMES:
        shutil.copy(builtin_dir / f"{name}.glb", root / f"{name}.glb")
    server = Mirror(root, frozenset(getattr(request, "param", ())))
    cache = tmp_path / "objaverse"
    (cache / "smithsonian").mkdir(parents=True)
    rows = [{"fileIdentifier": f"{server.url}/{name}.glb", "source": "smithsonian", "license": "CC0",
             "fileType": "glb", "sha256": hashlib.sha256((root / f"{name}.glb").read_bytes()).hexdigest(),
             "metadata": "{}"} for name in NAMES]
    pd.DataFrame(rows).to_parquet(cache / "smithsonian" / "smithsonian.parquet")
    yield server, cache
    server.shutdown()


def test_objaverse_xl_downloads_through_the_package_a_shard_at_a_time(ray_cluster, xl_mirror, tmp_path):
    server, cache = xl_mirror
    job, _ = small_job(tmp_path / "x.zarr", source="objaverse-xl", cache_dir=str(cache), samples_per_shard=2,
                       xl_sources=["smithsonian"])
    summary = runner.run(job, workers=2, progress=False)
    assert (summary.items_ok, summary.items_failed) == (4, 0), summary.failures
    assert sorted(server.requests) == sorted(f"/{name}.glb" for name in NAMES)  # once each
    for _, loc in objaverse_xl.list_objects(cache, sources=["smithsonian"])[0]:
        hit = objaverse_xl.cached(cache, json.loads(loc))
        assert hit is not None and hit.parent == cache / "smithsonian" / "objects"
    assert len(StoreReader(tmp_path / "x.zarr")) == 4


@pytest.mark.parametrize("xl_mirror", [["/builtin-globe.glb"]], indirect=True)
def test_a_download_that_never_answers_times_out_its_item_not_the_shard(ray_cluster, xl_mirror, tmp_path):
    server, cache = xl_mirror
    job, _ = small_job(tmp_path / "x.zarr", source="objaverse-xl", cache_dir=str(cache), samples_per_shard=4,
                       xl_sources=["smithsonian"])
    summary = runner.run(job, workers=1, timeout_s=5, progress=False)
    assert (summary.items_ok, summary.items_failed) == (3, 1) and summary.shard_failures == {}
    [hung] = summary.failures
    assert hung["key"].endswith("/builtin-globe.glb") and hung["stage"] == "timeout"
    # the shard's download call hung first (its watchdog fired), then the item's own fetch
    from pipeline.engine import shard_writer

    assert "timeout (prepare)" in shard_writer.journal_path(tmp_path / "x.zarr", 0).read_text()
