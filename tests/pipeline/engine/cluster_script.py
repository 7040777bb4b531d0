"""A real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and a
second node, each its own raylet with one CPU); render the built-in objects into one store
with ``--address``, kill the second node while it has an item in flight, report as JSON.

Run as a script (its own process: the test session already has a Ray driver):
    python tests/pipeline/engine/cluster_script.py OUT_DIR
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


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
