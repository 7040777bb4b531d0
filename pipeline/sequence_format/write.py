"""Write a sequence folder: ``write_sequence`` (metadata and arrays), ``write_frames`` (PNG, lossless),
``write_background``, ``copy_mesh`` (the mesh with the material/texture/buffer files it names)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.sequence_format.model import FORMAT_NAME, FORMAT_VERSION, SIDES, Sequence


def _dumps(data: dict) -> str:
    """JSON with every innermost list of numbers on one line (matrix rows stay readable)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]+?)\s+\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text) + "\n"


def write_sequence(folder: Path, seq: Sequence) -> None:
    """sequence.json, cameras.json (OpenCV axes), hands.npz, object arrays, joints_3d.npy into ``folder``.
    Frames, backgrounds and the mesh file (``seq.object_mesh``, already inside ``folder``) are written apart."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "n_frames": int(seq.n_frames)}
    if seq.fps:
        meta["fps"] = float(seq.fps)
    if seq.object_mesh is not None:
        meta["object"] = {"mesh": Path(seq.object_mesh).resolve().relative_to(folder.resolve()).as_posix(),
                          "name": seq.object_name or Path(seq.object_mesh).parent.name}
    if seq.source:
        meta["source"] = seq.source
    (folder / "sequence.json").write_text(_dumps(meta))
    cams = {}
    for name, cam in seq.cameras.items():
        pose = np.asarray(cam.cam_to_world, np.float64)
        static = pose.ndim == 2 or bool(np.all(pose == pose[:1]))
        cams[name] = {"K": np.asarray(cam.K, np.float64).tolist(), "width": int(cam.width), "height": int(cam.height),
                      "cam_to_world": (pose if pose.ndim == 2 else pose[0]).tolist() if static else pose.tolist()}
    (folder / "cameras.json").write_text(_dumps({"axes": "opencv", "cameras": cams}))
    hands = {"flat_hand_mean": np.array(seq.flat_hand_mean), "fix_left_shapedirs": np.array(seq.fix_left_shapedirs)}
    for side in SIDES:
        if side in seq.hands:
            h = seq.hands[side]
            hands |= {f"{side}_pose": np.asarray(h.pose, np.float64), f"{side}_betas": np.asarray(h.betas, np.float64),
                      f"{side}_trans": np.asarray(h.trans, np.float64), f"{side}_valid": np.asarray(h.valid, bool)}
    np.savez(folder / "hands.npz", **hands)
    if seq.object_mesh is not None:
        np.save(folder / "object_poses.npy", np.asarray(seq.object_poses, np.float64))
        np.save(folder / "object_valid.npy", np.asarray(seq.object_valid, bool))
        if seq.object_parts:
            parts = {"names": np.array([p.name for p in seq.object_parts])}
            for i, p in enumerate(seq.object_parts):
                parts |= {f"part{i}_vertices": np.asarray(p.vertices, np.float64),
                          f"part{i}_faces": np.asarray(p.faces, np.int64), f"part{i}_poses": np.asarray(p.poses, np.float64)}
            np.savez(folder / "object_parts.npz", **parts)
    if seq.joints_3d is not None:
        np.save(folder / "joints_3d.npy", np.asarray(seq.joints_3d, np.float64))


def write_frames(folder: Path, camera: str, start: int, images: np.ndarray) -> None:
    """uint8 [T,H,W,3] -> ``folder/frames/<camera>/<start+t:06d>.png``."""
    d = Path(folder) / "frames" / camera
    d.mkdir(parents=True, exist_ok=True)
    for t, im in enumerate(images):
        Image.fromarray(np.asarray(im, np.uint8)).save(d / f"{start + t:06d}.png", compress_level=1)


def write_background(folder: Path, camera: str, image: np.ndarray) -> None:
    d = Path(folder) / "background"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(d / f"{camera}.png")


def _assets(mesh: Path) -> list[str]:
    """Relative paths of the files ``mesh`` names (OBJ: mtllib and the maps of those .mtl files;
    glTF: buffer and image URIs). Absolute paths and data: URIs are not assets here."""
    names = []
    suffix = mesh.suffix.lower()
    if suffix == ".obj":
        for line in mesh.read_text(errors="replace").splitlines():
            if line.startswith("mtllib "):
                names.append(line[7:].strip())
        for mtl in list(names):
            path = mesh.parent / mtl
            if path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    tok = line.strip().split()
                    if tok and re.match(r"^(map_\w+|bump|disp|decal|norm)$", tok[0]) and len(tok) > 1:
                        names.append(tok[-1])
    elif suffix == ".gltf":
        data = json.loads(mesh.read_text())
        names += [x["uri"] for k in ("buffers", "images") for x in data.get(k, []) if "uri" in x]
    return [n for n in names if not n.startswith("data:") and not Path(n).is_absolute() and ".." not in Path(n).parts]


def copy_mesh(mesh: Path, folder: Path) -> Path:
    """Copy ``mesh`` and its assets into ``folder/object/`` (relative paths kept); the new mesh path."""
    mesh = Path(mesh)
    dest = Path(folder) / "object"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(mesh, dest / mesh.name)
    for name in _assets(mesh):
        src = mesh.parent / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest / mesh.name
