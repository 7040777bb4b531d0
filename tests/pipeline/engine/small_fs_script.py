"""``render-objaverse`` into a store on a small filesystem of its own (a tmpfs mounted in a
private mount namespace: run this under ``unshare -rm``), through the real CLI and a fresh
local Ray instance; reports each run's exit code and output as JSON.

    unshare -rm python tests/pipeline/engine/small_fs_script.py WORK no-space
        an 8 MB filesystem fills up after a few objects (24 x 256^2, ~1 MB each); it then grows to
        100 MB and the same command runs again
    unshare -rm python tests/pipeline/engine/small_fs_script.py WORK read-only
        the store's folder turns read-only once the first shard is marked (a read-only bind mount
        over it: a remount of the tmpfs itself is refused while workers hold journals open for
        writing); then writable again
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def mount(target: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)


def render(src: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "cli.py"), "render-objaverse", "--source", str(src), "--out", str(out),
           "--workers", "2", "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=str(ROOT))
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def main(work: Path, mode: str) -> dict:
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rf", dir="/tmp")  # Ray's files stay off the small disk
    from pipeline.objaverse.sources.builtin import builtin_uids, write_builtin

    src = work / "meshes"
    for i in range(20):  # 20 objects: the five built-in ones, four times each under other names
        uid = builtin_uids()[i % 5]
        path = write_builtin(uid, work / "builtin")
        (src / f"{i:02d}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / f"{i:02d}" / path.name)
    disk = work / "disk"
    disk.mkdir()
    out = disk / "objaverse.zarr"
    report = {"out": str(out)}
    try:
        if mode == "no-space":  # 24 x 256^2 samples, ~1 MB each: 8 MB holds a few
            mount(disk, "size=8m")
            args = ["--resolution", "256", "--samples-per-shard", "2"]
            report["first"] = render(src, out, args)
            mount_opts = "remount,size=100m"  # the disk grows
        else:
            mount(disk, "size=100m")
            args = ["--frames", "4", "--resolution", "64", "--samples-per-shard", "1"]
            stop = threading.Event()

            def freeze_after_first_marker():
                while not stop.is_set():
                    if list((out / "_shards").glob("*.json")):
                        # a failed mount must not pass silently (the run would simply finish): record why
                        for cmd in (["mount", "--bind", str(disk), str(disk)],
                                    ["mount", "-o", "remount,bind,ro", str(disk)]):
                            r = subprocess.run(cmd, capture_output=True, text=True)
                            if r.returncode != 0:
                                report["freeze_error"] = f"{' '.join(cmd)}: {r.stderr.strip()[:300]}"
                                return
                        report["frozen"] = True
                        return
                    time.sleep(0.02)

            watcher = threading.Thread(target=freeze_after_first_marker, daemon=True)
            watcher.start()
            report["first"] = render(src, out, args)
            stop.set()
        if mode == "no-space":
            subprocess.run(["mount", "-o", mount_opts, str(disk)], check=True)
        elif report.get("frozen"):
            subprocess.run(["umount", str(disk)], check=True)  # the read-only bind mount: writable again
        report["marked_after_first"] = len(list((out / "_shards").glob("*.json")))
        report["second"] = render(src, out, args)
        from schemas.reader import StoreReader

        reader = StoreReader(out)
        report["keys"] = [reader.key(i) for i in range(len(reader))]
        report["readable"] = sum(int(reader.read(i)["rgb"].any()) for i in range(len(reader)))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
