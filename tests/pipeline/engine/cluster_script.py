"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and more
nodes, each its own raylet); render built-in objects into one store with ``--address``, kill
nodes while they have an item in flight, report as JSON.

Run as a script (its own process: the test session already has a Ray driver):
    python tests/pipeline/engine/cluster_script.py OUT_DIR              # one node lost
    python tests/pipeline/engine/cluster_script.py OUT_DIR two-lost     # one item, two nodes lost under it
"""

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def main(out_dir: Path) -> dict:
    # a private Ray temp dir: Cluster writes its address to <temp>/ray/ray_current_cluster, where a
    # plain ray.init() of another process on this machine would otherwise find and join it
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    from ray.cluster_utils import Cluster

    from pipeline.engine import runner
    from tests.pipeline.helpers import small_job

    node_args = dict(num_cpus=1, object_store_memory=80 * 2**20, include_dashboard=False)
    cluster = Cluster(initialize_head=True, head_node_args=node_args)
    second = cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    chaos = out_dir / "chaos"
    chaos.mkdir(parents=True)
    job, _ = small_job(out_dir / "s.zarr", samples_per_shard=1, limit=4)
    job = dataclasses.replace(job, step="tests.pipeline.chaos_step:chaos_step",
                              options={**job.options, "chaos_all": "mark-and-sleep:1.5", "chaos_dir": str(chaos)})
    killed = {}

    def kill_second_node_mid_item():
        while not killed:
            hits = sorted(chaos.glob(f"*.{second.node_id}.*.start"))
            if hits:
                time.sleep(0.5)  # inside the item's sleep
                killed["item"] = hits[0].name.split(".")[0]
                cluster.remove_node(second, allow_graceful=False)
                killed["t"] = time.time()
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_second_node_mid_item, daemon=True)
    watcher.start()
    try:
        summary = runner.run(job, workers=2, address=cluster.address, timeout_s=60, progress=False)
    finally:
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    from schemas.reader import StoreReader

    reader = StoreReader(out_dir / "s.zarr")
    starts = [p.name for p in chaos.glob("*.start")]
    return {"keys": [reader.key(i) for i in range(len(reader))], "items": [i.key for i in job.items],
            "ok": summary.items_ok, "failed": summary.items_failed, "killed": killed,
            "failures": [{k: f.get(k) for k in ("key", "stage", "reason", "detail")} for f in summary.failures],
            "nodes": sorted({s.split(".")[1] for s in starts}), "second": second.node_id, "starts": starts}


def two_lost(out_dir: Path) -> dict:
    """A head with no CPU and two one-CPU nodes; one object. The node running its item is
    killed mid-item, then the node running the retry; then a third node joins and finishes it."""
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    from ray.cluster_utils import Cluster

    from pipeline.engine import runner
    from tests.pipeline.helpers import small_job

    args = dict(object_store_memory=80 * 2**20, include_dashboard=False)
    cluster = Cluster(initialize_head=True, head_node_args={**args, "num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1, **args), cluster.add_node(num_cpus=1, **args)]
    cluster.wait_for_nodes()
    chaos = out_dir / "chaos"
    chaos.mkdir(parents=True)
    job, _ = small_job(out_dir / "s.zarr", samples_per_shard=1, limit=1)
    job = dataclasses.replace(job, step="tests.pipeline.chaos_step:chaos_step",
                              options={**job.options, "chaos_all": "mark-and-sleep:3", "chaos_dir": str(chaos)})
    killed: list[str] = []
    result: dict = {}

    def render():  # the driver runs in a thread: Ray adds nodes only from the main thread
        try:
            result["summary"] = runner.run(job, workers=1, address=cluster.address, timeout_s=60, max_retries=4,
                                           progress=False)
        except BaseException as e:  # noqa: BLE001
            result["error"] = repr(e)

    driver = threading.Thread(target=render, daemon=True)
    driver.start()
    try:
        while len(killed) < 2 and driver.is_alive():
            for node in nodes:
                if node.node_id not in killed and list(chaos.glob(f"*.{node.node_id}.*.start")):
                    time.sleep(0.5)  # inside the item's sleep
                    cluster.remove_node(node, allow_graceful=False)
                    killed.append(node.node_id)
            time.sleep(0.1)
        if driver.is_alive():
            cluster.add_node(num_cpus=1, **args)
        driver.join(timeout=240)
    finally:
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    if "summary" not in result:
        raise RuntimeError(result.get("error", "the run did not end"))
    summary = result["summary"]
    from schemas.reader import StoreReader

    reader = StoreReader(out_dir / "s.zarr")
    return {"keys": [reader.key(i) for i in range(len(reader))], "items": [i.key for i in job.items],
            "ok": summary.items_ok, "failed": summary.items_failed, "killed": killed,
            "failures": [{k: f.get(k) for k in ("key", "stage", "reason", "detail")} for f in summary.failures],
            "starts": sorted(p.name for p in chaos.glob("*.start"))}


if __name__ == "__main__":
    run = two_lost if sys.argv[2:] == ["two-lost"] else main
    print(json.dumps(run(Path(sys.argv[1]))))
