"""Parsing an OakInk2-sized annotation pickle: the eager ``TensorUnpickler`` against the lazy
``LazyTensorUnpickler`` the adapter uses (tensors decoded only when read), side by side in one run,
plus the cost of then decoding one 16-frame window's hands from the lazy result.

The file is synthetic, shaped like OakInk2's ``anno_preview/<seq>.pkl`` (README "Dataset Format"):
per mocap frame a ``raw_mano`` dict of 6 tensors and a ``raw_smplx`` dict of 10 (``body_shape``
[1,300] ...), ``--frames`` mocap frames (default 6400: ~53 s at 120 Hz, about OakInk2's mean length).
Usage: .venv/bin/python benchmarks/anno_parse.py [--frames 6400] [--repeats 3]
"""

import argparse
import io
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.hoi.torch_pickle import LazyTensorUnpickler, TensorUnpickler  # noqa: E402


def make(frames: int) -> bytes:
    import torch

    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mano = {f: {f"{s}__{k}": r(*shape) for s in ("lh", "rh")
                for k, shape in (("pose_coeffs", (1, 16, 4)), ("tsl", (1, 3)), ("betas", (1, 10)))} for f in range(frames)}
    smplx = {f: {k: r(*shape) for k, shape in (("body_shape", (1, 300)), ("expr_shape", (1, 10)), ("jaw_pose", (1, 1, 4)),
                                                ("leye_pose", (1, 1, 4)), ("reye_pose", (1, 1, 4)), ("world_rot", (1, 4)),
                                                ("world_tsl", (1, 3)), ("body_pose", (1, 21, 4)),
                                                ("left_hand_pose", (1, 15, 4)), ("right_hand_pose", (1, 15, 4)))}
             for f in range(frames)}
    ids = list(range(0, frames, 4))
    cams = ("allocentric_top", "allocentric_left", "allocentric_right", "egocentric")
    return pickle.dumps({"cam_def": {f"s{i}": c for i, c in enumerate(cams)}, "cam_selection": list(cams),
                         "frame_id_list": ids, "cam_intr": {c: {f: np.eye(3) for f in ids} for c in cams},
                         "cam_extr": {c: {f: np.eye(4) for f in ids} for c in cams}, "mocap_frame_id_list": list(range(frames)),
                         "obj_list": ["a"], "obj_transf": {"a": {f: np.eye(4) for f in range(frames)}},
                         "raw_smplx": smplx, "raw_mano": mano})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=6400)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    data = make(a.frames)
    times = {"eager (TensorUnpickler)": [], "lazy (LazyTensorUnpickler)": [], "lazy + one 16-frame window": []}
    for _ in range(a.repeats):
        for name, cls in (("eager (TensorUnpickler)", TensorUnpickler), ("lazy (LazyTensorUnpickler)", LazyTensorUnpickler)):
            t = time.perf_counter()
            out = cls(io.BytesIO(data)).load()
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        for f in out["frame_id_list"][:16]:
            for k in ("lh__pose_coeffs", "lh__tsl", "lh__betas", "rh__pose_coeffs", "rh__tsl", "rh__betas"):
                np.asarray(out["raw_mano"][f][k])
        times["lazy + one 16-frame window"].append(times["lazy (LazyTensorUnpickler)"][-1] + time.perf_counter() - t)
    print(f"annotation pickle: {len(data) / 1e6:.1f} MB, {a.frames} mocap frames, {16 * a.frames} tensors; "
          f"median of {a.repeats}")
    base = statistics.median(times["eager (TensorUnpickler)"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:<30} {m:7.2f} s   x{base / m:.2f} vs eager")


if __name__ == "__main__":
    main()
