"""Read and validate a sequence folder (see the package docstring); frames from images or video."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.assets.mesh_io import SUPPORTED_SUFFIXES
from pipeline.errors import UserError
from pipeline.sequence_format import checks as c
from pipeline.sequence_format.model import (
    FORMAT_NAME,
    FORMAT_VERSION,
    GL_TO_CV,
    IMAGE_SUFFIXES,
    SIDES,
    VIDEO_SUFFIXES,
    Camera,
    HandSequence,
    PartSequence,
    Sequence,
)

HAND_FIELDS = ("pose", "betas", "trans", "valid")
CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_sequence(folder: str | Path) -> Sequence:
    """Validate ``folder`` and return its arrays (``UserError`` "<file>: <field>: <problem>" otherwise).
    Frame files are listed and the first one's size checked; pixels are read by ``read_frames``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected a sequence folder with sequence.json)")
    meta_path = folder / "sequence.json"
    meta = c.load_json(meta_path)
    if meta.get("format") != FORMAT_NAME:
        raise c.fail(meta_path, "format", f"must be {FORMAT_NAME!r}, got {meta.get('format')!r}")
    version = c.need(meta, "format_version", meta_path)
    if not isinstance(version, int) or version < 1:
        raise c.fail(meta_path, "format_version", f"must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise c.fail(meta_path, "format_version", f"{version} is newer than this reader ({FORMAT_VERSION}); update")
    F = c.need(meta, "n_frames", meta_path)
    if not isinstance(F, int) or isinstance(F, bool) or F < 1:
        raise c.fail(meta_path, "n_frames", f"must be an integer >= 1, got {F!r}")
    fps = meta.get("fps")
    if fps is not None and (not isinstance(fps, (int, float)) or not fps > 0):
        raise c.fail(meta_path, "fps", f"must be a positive number or absent, got {fps!r}")
    hands, flat, fix_left = _hands(folder / "hands.npz", F)
    mesh, name, poses, valid, parts = _object(folder, meta, meta_path, F)
    joints = None
    if (folder / "joints_3d.npy").exists():
        j = c.load_npy(folder / "joints_3d.npy")
        if j.dtype.kind != "f":
            raise c.fail(folder / "joints_3d.npy", "", f"dtype {j.dtype}, expected float32/float64")
        joints = c.array(np.where(np.isnan(j), 0, j), folder / "joints_3d.npy", "", (F, 2, 21, 3))
        joints[np.isnan(j)] = np.nan
    source = meta.get("source", {})
    return Sequence(folder=folder, name=folder.resolve().name, n_frames=F, fps=None if fps is None else float(fps),
                    cameras=_cameras(folder, F), hands=hands, flat_hand_mean=flat, fix_left_shapedirs=fix_left,
                    object_mesh=mesh, object_name=name, object_poses=poses, object_valid=valid, object_parts=parts,
                    joints_3d=joints, source=source if isinstance(source, dict) else {})


def _cameras(folder: Path, F: int) -> dict[str, Camera]:
    path = folder / "cameras.json"
    data = c.load_json(path)
    axes = c.need(data, "axes", path)
    if axes not in ("opencv", "opengl"):
        raise c.fail(path, "axes", f"must be 'opencv' (x right, y down, z forward) or 'opengl' (y up, z back), "
                     f"got {axes!r}")
    cams = c.need(data, "cameras", path)
    if not isinstance(cams, dict) or not cams:
        raise c.fail(path, "cameras", "must be a non-empty object {name: camera}")
    out = {}
    for name, cam in cams.items():
        where = f"cameras.{name}"
        if not CAMERA_NAME.match(name):
            raise c.fail(path, where, "camera names use letters, digits, '_', '.', '-' only")
        if not isinstance(cam, dict):
            raise c.fail(path, where, "must be an object")
        K = c.array(c.need(cam, "K", path), path, f"{where}.K", (3, 3))
        if K[0, 0] <= 0 or K[1, 1] <= 0 or K[0, 1] != 0 or np.any(K[2] != [0, 0, 1]) or K[1, 0] != 0:
            raise c.fail(path, f"{where}.K", "must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        size = []
        for key in ("width", "height"):
            v = c.need(cam, key, path)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise c.fail(path, f"{where}.{key}", f"must be a positive integer, got {v!r}")
            size.append(v)
        shape = (F, 4, 4) if _ndim(c.need(cam, "cam_to_world", path)) == 3 else (4, 4)
        pose = c.array(c.need(cam, "cam_to_world", path), path, f"{where}.cam_to_world", shape)
        c.rigid(pose, path, f"{where}.cam_to_world")
        pose = np.broadcast_to(pose, (F, 4, 4)).copy()
        if axes == "opengl":
            pose = pose @ GL_TO_CV
        dist = cam.get("distortion")
        if dist is not None:
            d = c.array(dist, path, f"{where}.distortion", (None,))
            if np.any(d != 0):
                raise c.fail(path, f"{where}.distortion", "non-zero lens distortion is not supported: undistort the "
                             "frames first (e.g. cv2.undistort) and write the new K with distortion zero or absent")
        frames = _frames_source(folder, name)
        w, h = _first_frame_size(frames)
        if (w, h) != tuple(size):
            raise c.fail(frames, "", f"frames are {w}x{h} but {path.name} {where} says {size[0]}x{size[1]}")
        bg = folder / "background" / f"{name}.png"
        if bg.exists():
            with Image.open(bg) as im:
                if im.size != tuple(size):
                    raise c.fail(bg, "", f"is {im.size[0]}x{im.size[1]}, camera {name} is {size[0]}x{size[1]}")
        out[name] = Camera(name=name, K=K, width=size[0], height=size[1], cam_to_world=pose, frames=frames,
                           background=bg if bg.exists() else None)
    return out


def _ndim(value) -> int:
    try:
        return np.asarray(value).ndim
    except (ValueError, TypeError):
        return -1


def _hands(path: Path, F: int) -> tuple[dict[str, HandSequence], bool, bool]:
    data = c.load_npz(path)
    flags = []
    for key in ("flat_hand_mean", "fix_left_shapedirs"):
        v = c.array(c.need(data, key, path), path, key, (), "bool")
        flags.append(bool(v))
    allowed = {"flat_hand_mean", "fix_left_shapedirs"} | {f"{s}_{f}" for s in SIDES for f in HAND_FIELDS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise c.fail(path, unknown[0], f"unknown key (expected {{left,right}}_{{{','.join(HAND_FIELDS)}}}, "
                     "flat_hand_mean, fix_left_shapedirs)")
    hands = {}
    for side in SIDES:
        present = [f for f in HAND_FIELDS if f"{side}_{f}" in data]
        if not present:
            continue
        for f in HAND_FIELDS:
            c.need(data, f"{side}_{f}", path)
        valid = c.array(data[f"{side}_valid"], path, f"{side}_valid", (F,), "bool")
        pose = c.array(data[f"{side}_pose"], path, f"{side}_pose", (F, 48), finite_where=valid)
        trans = c.array(data[f"{side}_trans"], path, f"{side}_trans", (F, 3), finite_where=valid)
        betas = c.array(data[f"{side}_betas"], path, f"{side}_betas", (10,))
        pose[~valid], trans[~valid] = 0.0, 0.0
        hands[side] = HandSequence(pose=pose, betas=betas, trans=trans, valid=valid)
    if not hands:
        raise c.fail(path, "", "holds no hand (expected left_* and/or right_* arrays)")
    return hands, flags[0], flags[1]


def _object(folder: Path, meta: dict, meta_path: Path, F: int):
    obj = meta.get("object")
    if obj is None:
        return None, None, np.tile(np.eye(4), (F, 1, 1)), np.zeros(F, bool), None
    if not isinstance(obj, dict) or not isinstance(obj.get("mesh"), str):
        raise c.fail(meta_path, "object", 'must be {"mesh": "object.glb", "name": "..."} or null')
    mesh = (folder / obj["mesh"]).resolve()
    if folder.resolve() not in mesh.parents:
        raise c.fail(meta_path, "object.mesh", f"{obj['mesh']!r} leaves the sequence folder")
    if mesh.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise c.fail(meta_path, "object.mesh", f"{mesh.name}: not one of {', '.join(SUPPORTED_SUFFIXES)}")
    if not mesh.is_file():
        raise c.fail(mesh, "", "missing (sequence.json object.mesh)")
    name = obj.get("name", mesh.parent.name)
    if not isinstance(name, str) or not name:
        raise c.fail(meta_path, "object.name", "must be a non-empty string")
    vpath = folder / "object_valid.npy"
    valid = c.array(c.load_npy(vpath), vpath, "", (F,), "bool") if vpath.exists() else np.ones(F, bool)
    ppath = folder / "object_poses.npy"
    poses = c.array(c.load_npy(ppath), ppath, "", (F, 4, 4), finite_where=valid)
    poses[~valid] = np.eye(4)
    c.rigid(poses, ppath, "", valid, allow_scale=True)
    parts = _parts(folder / "object_parts.npz", F, valid) if (folder / "object_parts.npz").exists() else None
    return mesh, name, poses, valid, parts


def _parts(path: Path, F: int, valid: np.ndarray) -> list[PartSequence]:
    data = c.load_npz(path)
    names = c.need(data, "names", path)
    if names.dtype.kind != "U" or names.ndim != 1 or not len(names):
        raise c.fail(path, "names", f"must be a 1-D array of strings, got {names.dtype} {names.shape}")
    parts = []
    for i, name in enumerate(names):
        v = c.array(c.need(data, f"part{i}_vertices", path), path, f"part{i}_vertices", (None, 3))
        f = c.array(c.need(data, f"part{i}_faces", path), path, f"part{i}_faces", (None, 3), "int")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise c.fail(path, f"part{i}_faces", f"index out of range 0..{len(v) - 1}")
        p = c.array(c.need(data, f"part{i}_poses", path), path, f"part{i}_poses", (F, 4, 4), finite_where=valid)
        p[~valid] = np.eye(4)
        c.rigid(p, path, f"part{i}_poses", valid, allow_scale=True)
        parts.append(PartSequence(name=str(name), vertices=v, faces=f, poses=p))
    return parts


# -- frames ----------------------------------------------------------------------------------
def natural_key(name: str) -> list:
    """Sort key for file names in natural order: "f_2" before "f_10"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _frames_source(folder: Path, camera: str) -> Path:
    """frames/<camera>/ (image folder) or frames/<camera>.<video suffix>."""
    d = folder / "frames" / camera
    videos = [folder / "frames" / f"{camera}{s}" for s in VIDEO_SUFFIXES if (folder / "frames" / f"{camera}{s}").is_file()]
    if d.is_dir() and videos:
        raise c.fail(d, "", f"both an image folder and {videos[0].name} exist for camera {camera}; keep one")
    if d.is_dir():
        return d
    if videos:
        return videos[0]
    raise c.fail(folder / "frames", "", f"no frames for camera {camera}: expected frames/{camera}/ (images) or "
                 f"frames/{camera}.mp4")


def image_files(frames: Path) -> list[Path]:
    return sorted((p for p in frames.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))


def _first_frame_size(frames: Path) -> tuple[int, int]:
    if frames.is_dir():
        files = image_files(frames)
        if not files:
            raise c.fail(frames, "", f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
        try:
            with Image.open(files[0]) as im:
                return im.size
        except OSError as e:
            raise c.fail(files[0], "", f"unreadable image ({type(e).__name__})") from None
    reader = _video_reader(frames)
    try:
        return tuple(reader.get_meta_data()["size"])
    finally:
        reader.close()


def count_frames(frames: Path) -> int:
    """Frames in an image folder, or decoded from a video (ffmpeg reads the whole file)."""
    if frames.is_dir():
        return len(image_files(frames))
    import imageio_ffmpeg

    try:
        return int(imageio_ffmpeg.count_frames_and_secs(str(frames))[0])
    except (RuntimeError, OSError) as e:
        raise c.fail(frames, "", f"unreadable video ({str(e).splitlines()[0][:80]})") from None


def check_frame_counts(seq: Sequence, cameras: list[str]) -> None:
    for name in cameras:
        n = count_frames(seq.cameras[name].frames)
        if n != seq.n_frames:
            raise c.fail(seq.cameras[name].frames, "", f"{n} frames, sequence.json n_frames is {seq.n_frames}")


def _video_reader(path: Path):
    import imageio.v2 as iio

    try:
        return iio.get_reader(str(path), format="FFMPEG")
    except Exception as e:  # noqa: BLE001  (imageio raises several kinds)
        raise c.fail(path, "", f"unreadable video ({type(e).__name__})") from None


def read_frames(camera: Camera, frame_ids: list[int]) -> np.ndarray:
    """uint8 [T,H,W,3] RGB frames ``frame_ids`` of ``camera`` (UserError naming a missing/bad file)."""
    out = []
    if camera.frames.is_dir():
        files = image_files(camera.frames)
        for i in frame_ids:
            if i >= len(files):
                raise c.fail(camera.frames, "", f"has {len(files)} images, frame {i} asked")
            try:
                with Image.open(files[i]) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except OSError as e:
                raise c.fail(files[i], "", f"unreadable image ({type(e).__name__})") from None
    else:
        reader = _video_reader(camera.frames)
        try:
            for i in frame_ids:
                try:
                    out.append(np.asarray(reader.get_data(i))[..., :3])
                except IndexError:
                    raise c.fail(camera.frames, "", f"video ends before frame {i}") from None
        finally:
            reader.close()
    for i, im in zip(frame_ids, out, strict=True):
        if im.shape[:2] != (camera.height, camera.width):
            raise c.fail(camera.frames, "", f"frame {i} is {im.shape[1]}x{im.shape[0]}, camera {camera.name} is "
                         f"{camera.width}x{camera.height}")
    return np.stack(out)
