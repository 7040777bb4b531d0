"""``view STORE INDEX``: one store sample in Rerun (https://rerun.io), on a ``frame`` timeline.

Works for every store kind; what is drawn follows the arrays the store has
(``StoreReader.array_names``):

  * ``world/camera`` camera-to-world pose and ``world/camera/image`` the pinhole (``K``,
    R x R). The store's camera axes are OpenGL (x right, y up, z back); Rerun's pinhole
    projects from RDF (x right, y down, z forward) camera axes, so the logged pose is
    ``cam_pose @ diag(1,-1,-1,1)`` (``camera_pose_rdf``). ``K`` is logged as is: both the
    store and Rerun put pixel centres at +0.5 (image spans [0, R]);
  * ``world/camera/image/rgb`` the frames, ``world/camera/image/joints/<side>`` the 21
    projected joints (``joints_2d``, -1 = invalid: not drawn) with bones, one colour per hand;
  * ``layers/{normal,depth,occlusion}/<layer>``: each stored MLO layer alone (normals as
    colour, depth in metres / scene units, occlusion confidence D of
    ``schemas.occlusion.occlusion_confidence`` at ``tau``, as uint8 0..255); cleared in
    frames where the layer is absent; layers the store does not carry are not logged;
  * ``world/hands/<side>``: hand meshes from ``mano_pose``/``mano_betas``/``mano_trans`` with
    the hand model that made the store (manifest: stand-in or MANO; MANO needs its files),
    ``world/hands/<side>/joints`` the stored ``joints_3d``; cleared where the hand is invalid;
  * ``world/object/points``: ``points`` posed by the trajectory,
    world = R(obj_rot) @ (obj_scale * p) + obj_trans (quaternion x, y, z, w);
  * static: ``refs/<view>`` reference views, ``refs/background``, ``info`` (key, attrs);
  * any other array (e.g. a human store's keypoints or skeleton map) is drawn by shape:
    [T,H,W,3] uint8 -> ``frames/<name>``, [T,K,2|3] float -> 2D points on the image
    (third column = confidence, <= 0 not drawn), [H,W,3] uint8 -> ``refs/<name>``.

World axes: y up, z back (RUB) for both HOI stores (world = the OpenGL camera frame) and
Objaverse stores (glTF canonical frame, camera on +z).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from schemas.occlusion import DEFAULT_TAU, occlusion_confidence
from schemas.store import HUMAN_KEYPOINT_NAMES, REF_VIEW_NAMES

EXTRA_ERROR = "the viewer needs the optional extra: pip install -e .[viewer]"
SIDES = ("left", "right")
SIDE_COLORS = {"left": (40, 130, 255), "right": (255, 110, 30)}
# 21-joint order (wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20): one strip per finger
HAND_BONES = tuple((0, 4 * f + 1, 4 * f + 2, 4 * f + 3, 4 * f + 4) for f in range(5))
RDF_FROM_RUB = np.diag([1.0, -1.0, -1.0, 1.0])
KNOWN = frozenset({"rgb", "mlo_normal", "mlo_depth", "layer_present", "ref_views", "background", "points",
                   "point_normals", "obj_rot", "obj_trans", "obj_scale", "K", "cam_pose", "mano_pose",
                   "mano_betas", "mano_trans", "hand_valid", "joints_3d", "joints_2d"})


def import_rerun():
    """The ``rerun`` module, or UserError naming the optional extra."""
    try:
        import rerun
    except ImportError:
        raise UserError(EXTRA_ERROR) from None
    return rerun


# -- pure conversions (numpy in, numpy out) -----------------------------------------------
def camera_pose_rdf(cam_pose: np.ndarray) -> np.ndarray:
    """Camera-to-world [4,4] with RDF camera axes (Rerun's pinhole, OpenCV) from the store's
    camera-to-world pose with OpenGL (RUB) axes: flip the camera's y and z axes."""
    return np.asarray(cam_pose, np.float64) @ RDF_FROM_RUB


def project_rdf(points_world: np.ndarray, cam_pose: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels [...,2] of world points [...,3] as Rerun's pinhole draws them: camera point
    x = pose_rdf^-1 p (z forward), pixel = (K x)[:2] / x_z (pixel centres at +0.5)."""
    pose = camera_pose_rdf(cam_pose)
    x = (np.asarray(points_world, np.float64) - pose[:3, 3]) @ pose[:3, :3]
    uvw = x @ np.asarray(K, np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def to_world(points_cam: np.ndarray, cam_pose: np.ndarray) -> np.ndarray:
    """Camera-frame (OpenGL) points [...,3] -> world, with camera-to-world ``cam_pose`` [4,4]."""
    pose = np.asarray(cam_pose, np.float64)
    return np.asarray(points_cam, np.float64) @ pose[:3, :3].T + pose[:3, 3]


def pose_points(points: np.ndarray, quat_xyzw: np.ndarray, trans: np.ndarray, scale) -> np.ndarray:
    """Canonical points [N,3] posed per frame: [T,N,3] = R(q_t) @ (scale * p) + t_t."""
    from scipy.spatial.transform import Rotation

    R = Rotation.from_quat(np.asarray(quat_xyzw, np.float64)).as_matrix()  # scipy: x, y, z, w
    p = float(np.asarray(scale).reshape(-1)[0]) * np.asarray(points, np.float64)
    return np.einsum("tij,nj->tni", R, p) + np.asarray(trans, np.float64)[:, None, :]


def valid_2d(points: np.ndarray) -> np.ndarray:
    """bool [...] : a 2D point [...,2] is drawn unless it is marked invalid (any coordinate < 0)."""
    return (np.asarray(points) >= 0).all(axis=-1)


def occlusion_u8(depth: np.ndarray, tau: float) -> np.ndarray:
    """D of one frame's layers [L,R,R] depth -> uint8 [L,R,R] (D * 255, rounded)."""
    return np.round(occlusion_confidence(np.asarray(depth, np.float32), tau) * 255).astype(np.uint8)


# -- hand model choice ------------------------------------------------------------------
def hand_models_for(store, mano_dir: str | None) -> tuple[dict | None, str]:
    """The hand models that made the store ({side: HandModel} or None) and a one-line note.

    The manifest's options say which model (``hoi.hand_model``: "stand-in" or "mano") and the
    left-hand shapedirs setting; MANO needs ``mano_dir`` (else the folder the store was made
    with, if it still exists); without MANO files no meshes are drawn, only ``joints_3d``."""
    from pipeline.hands.model import hand_models
    from schemas.storage import open_location

    options = (open_location(store).read_json_or_none("manifest.json") or {}).get("options", {})
    hoi = options.get("hoi") or {}
    kind = hoi.get("hand_model")
    fix_left = bool(hoi.get("fix_left_shapedirs") or False)
    if kind == "stand-in":
        return hand_models("stand-in"), "hands: stand-in hand (not MANO), as the store was made"
    folder = mano_dir or options.get("mano_dir")
    if kind == "mano" and folder and Path(folder).is_dir():
        return hand_models("mano", str(folder), fix_left), f"hands: MANO from {folder}"
    what = "MANO" if kind == "mano" else "an unrecorded hand model"
    return None, f"note: the store was made with {what}; no hand meshes without --mano-dir (showing joints_3d)"


# -- logging ------------------------------------------------------------------------------
class _Logger:
    """Logs one sample's arrays into a Rerun recording stream."""

    def __init__(self, rr, rec, arrays: dict, layers: tuple[str, ...], tau: float, image_hw: tuple | None):
        self.rr, self.rec, self.a, self.layers, self.tau, self.image_hw = rr, rec, arrays, layers, tau, image_hw
        self.entities: set[str] = set()
        self.px = max(1.0, image_hw[0] / 200) if image_hw else 1.5  # 2D point radius, pixels

    def log(self, path: str, item, static: bool = False) -> None:
        self.rec.log(path, item, static=static)
        self.entities.add(path)

    def static(self, key: str, attrs: dict, notes: list[str]) -> None:
        rr, a = self.rr, self.a
        self.log("world", rr.ViewCoordinates.RUB, static=True)
        if "K" in a and np.any(a["K"]) and self.image_hw is not None:  # all-zero K = camera unknown (human)
            pose = camera_pose_rdf(a.get("cam_pose", np.eye(4)))
            dist = np.linalg.norm(a["obj_trans"].mean(0) - pose[:3, 3]) if "obj_trans" in a else 1.0
            self.log("world/camera", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]), static=True)
            h, w = self.image_hw
            self.log("world/camera/image", rr.Pinhole(image_from_camera=a["K"], resolution=[w, h],
                                                      image_plane_distance=0.3 * float(dist)), static=True)
        if "ref_views" in a:
            for name, img in zip(REF_VIEW_NAMES, a["ref_views"], strict=True):
                self.log(f"refs/{name}", rr.Image(img), static=True)
        if "background" in a:
            self.log("refs/background", rr.Image(a["background"]), static=True)
        if "keypoints" in a and a["keypoints"].shape[1] == len(HUMAN_KEYPOINT_NAMES):
            names = rr.ClassDescription(info=(0, "person"), keypoint_annotations=list(enumerate(HUMAN_KEYPOINT_NAMES)))
            self.log("world/camera/image/keypoints", rr.AnnotationContext([names]), static=True)
        text = [f"**sample** `{key}`", *(f"- {n}" for n in notes)]
        text += [f"- `{k}`: {v}" for k, v in attrs.items()]
        self.log("info", rr.TextDocument("\n".join(text), media_type="text/markdown"), static=True)

    def frame_layers(self, t: int, normal: np.ndarray, depth: np.ndarray) -> None:
        """normal [L,R,R,3] uint8, depth [L,R,R] float16 of frame t."""
        rr = self.rr
        present = self.a["layer_present"][t] if "layer_present" in self.a else (depth > 0).any(axis=(1, 2))
        d = occlusion_u8(depth, self.tau)
        for k, name in enumerate(self.layers):
            paths = (f"layers/normal/{name}", f"layers/depth/{name}", f"layers/occlusion/{name}")
            if not present[k]:
                for p in paths:
                    self.log(p, rr.Clear(recursive=False))
                continue
            self.log(paths[0], rr.Image(normal[k]))
            self.log(paths[1], rr.DepthImage(depth[k], meter=1.0))
            self.log(paths[2], rr.Image(d[k], color_model="L"))

    def frame_hands(self, t: int, meshes: dict | None, models: dict | None) -> None:
        rr, a = self.rr, self.a
        pose = a.get("cam_pose", np.eye(4))
        for s, side in enumerate(SIDES):
            color = SIDE_COLORS[side]
            if "joints_2d" in a:
                j2 = a["joints_2d"][t, s]
                ok = valid_2d(j2)
                path = f"world/camera/image/joints/{side}"
                if ok.any():
                    self.log(path, rr.Points2D(j2[ok], colors=color, radii=self.px))
                    strips = [j2[list(b)] for b in HAND_BONES if ok[list(b)].all()]
                    self.log(path + "/bones", rr.LineStrips2D(strips, colors=color, radii=self.px / 2))
                else:
                    self.log(path, rr.Clear(recursive=True))
            if "hand_valid" not in a:
                continue
            path = f"world/hands/{side}"
            if not a["hand_valid"][t, s]:
                self.log(path, rr.Clear(recursive=True))
                continue
            if meshes is not None:
                from pipeline.render.mlo import vertex_normals  # the MLO layers' own normals

                m = models[side]
                v = to_world(meshes[side][t], pose)
                self.log(path, rr.Mesh3D(vertex_positions=v, triangle_indices=m.faces,
                                         vertex_normals=vertex_normals(v, m.faces),
                                         vertex_colors=self._part_colors(m, color)))
            if "joints_3d" in a:
                j3 = to_world(a["joints_3d"][t, s], pose)
                self.log(path + "/joints", rr.Points3D(j3, colors=color, radii=0.002))
                self.log(path + "/bones", rr.LineStrips3D([j3[list(b)] for b in HAND_BONES], colors=color))

    @staticmethod
    def _part_colors(model, color) -> np.ndarray:
        from pipeline.hands.parts import vertex_parts

        shade = np.linspace(1.0, 0.55, 6)[vertex_parts(np.asarray(model.arrays["weights"]))]
        return np.round(np.asarray(color)[None, :] * shade[:, None]).astype(np.uint8)

    def frame_object(self, t: int, posed: np.ndarray | None) -> None:
        if posed is None:
            return
        colors = np.round((self.a["point_normals"] + 1) / 2 * 255).astype(np.uint8) if "point_normals" in self.a else None
        radius = 0.01 * float(np.asarray(self.a.get("obj_scale", 0.3)).reshape(-1)[0])  # 1% of the object's size
        self.log("world/object/points", self.rr.Points3D(posed[t], colors=colors, radii=radius))

    def frame_other(self, t: int, name: str, arr: np.ndarray) -> None:
        rr, x = self.rr, arr[t]
        if x.ndim == 3 and x.dtype == np.uint8:
            self.log(f"frames/{name}", rr.Image(x))
        elif x.ndim == 2 and x.shape[-1] in (2, 3) and x.dtype.kind == "f":
            ok = valid_2d(x[:, :2]) & ((x[:, 2] > 0) if x.shape[-1] == 3 else True)
            self.log(f"world/camera/image/{name}", rr.Points2D(x[ok, :2], radii=self.px, class_ids=0,
                                                              keypoint_ids=np.nonzero(ok)[0]))
        elif x.ndim == 2 and x.dtype in (np.uint8, np.bool_):
            self.log(f"frames/{name}", rr.Image(x.astype(np.uint8) * (255 if x.dtype == np.bool_ else 1),
                                                color_model="L"))


def _other_arrays(reader, names: tuple[str, ...], T: int) -> tuple[list[str], list[str], list[str]]:
    """Arrays outside the known HOI/Objaverse set, split into (per-frame, static image, not shown)."""
    per_frame, static, skipped = [], [], []
    for name in names:
        if name in KNOWN:
            continue
        shape, dtype = reader.group[name].shape[1:], reader.group[name].dtype
        if len(shape) >= 2 and shape[0] == T:
            per_frame.append(name)
        elif len(shape) == 3 and shape[-1] == 3 and dtype == np.uint8:
            static.append(name)
        else:
            skipped.append(name)
    return per_frame, static, skipped


def blueprint(layers: tuple[str, ...], refs: list[str], frames: list[str], has_3d: bool = True):
    """The default layout: 3D scene over the camera image, layer / reference / extra-frame grids in tabs."""
    import rerun.blueprint as rrb

    def grid(kind: str, title: str):
        views = [rrb.Spatial2DView(origin=f"layers/{kind}/{n}", name=n) for n in layers]
        return rrb.Grid(*views, name=title)

    tabs = [grid("normal", "MLO normals"), grid("depth", "MLO depth"), grid("occlusion", "D")] if layers else []
    if refs:
        tabs.append(rrb.Grid(*[rrb.Spatial2DView(origin=f"refs/{n}", name=n) for n in refs], name="references"))
    tabs += [rrb.Spatial2DView(origin=f"frames/{n}", name=n) for n in frames]
    camera = rrb.Spatial2DView(origin="world/camera/image", name="camera")
    main = rrb.Vertical(rrb.Spatial3DView(origin="world", name="3D scene"), camera) if has_3d else camera
    right = [rrb.Tabs(*tabs)] if tabs else []
    return rrb.Blueprint(rrb.Horizontal(main, *right, rrb.TextDocumentView(origin="info", name="info")),
                         collapse_panels=False)


def _spawn_viewer(rr, rec, bp) -> None:
    """Start the Rerun viewer that ships with rerun-sdk (``rerun`` beside this Python when the
    venv is not activated) and stream ``rec`` to it; UserError (one line) if it cannot start."""
    import shutil
    import sys

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("no display for the Rerun viewer (DISPLAY and WAYLAND_DISPLAY are unset); "
                        "use --save FILE.rrd and open it on a machine with one: rerun FILE.rrd")
    exe = shutil.which("rerun") or str(Path(sys.executable).parent / "rerun")
    if not Path(exe).exists():
        raise UserError("the Rerun viewer executable 'rerun' was not found (it comes with rerun-sdk); "
                        "use --save FILE.rrd and open it with: rerun FILE.rrd")
    import socket
    import time

    port = 9876
    try:
        rr.spawn(port=port, connect=False, executable_path=exe, recording=rec)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not start the Rerun viewer ({first}); use --save FILE.rrd") from None
    deadline = time.monotonic() + 15.0  # a viewer that cannot open a window exits: do not wait on it forever
    while True:
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise UserError(f"the Rerun viewer did not start (nothing listens on port {port}); "
                            "use --save FILE.rrd and open it with: rerun FILE.rrd")
        time.sleep(0.25)
    rec.connect_grpc(f"rerun+http://127.0.0.1:{port}/proxy", default_blueprint=bp)


def _name(store) -> str:
    """The store's last path component (a folder or a URL)."""
    return str(store).rstrip("/").rpartition("/")[2]


def view(store, index: int, save: Path | None = None, mano_dir: str | None = None,
         tau: float = DEFAULT_TAU, progress: bool = True) -> str:
    """Log sample ``index`` of ``store`` to ``save`` (.rrd) or to a spawned viewer; returns a summary line."""
    from tqdm import tqdm

    from pipeline.inspection.inspect_store import open_reader

    rr = import_rerun()
    if tau <= 0:
        raise UserError(f"--tau must be > 0, got {tau}")
    reader = open_reader(store)
    if not 0 <= index < len(reader):
        raise UserError(f"sample {index} out of range: {store} has {len(reader)} valid samples")
    if save is not None and (not Path(save).parent.is_dir() or Path(save).is_dir()):
        raise UserError(f"--save {save}: the folder {Path(save).parent} does not exist or {save} is a folder")
    names = reader.array_names
    T, layers = reader.layout.frames, tuple(reader.layout.layers) if "mlo_depth" in names else ()
    per_frame_names = {"rgb", "mlo_normal", "mlo_depth"}
    arrays = reader.read(index, names=[n for n in names if n not in per_frame_names])
    per_other, static_other, skipped = _other_arrays(reader, names, T)
    notes = [f"store {_name(store)}: kind {reader.layout.kind}, {T} frames, layers: {', '.join(layers) or 'none'}"]
    models = meshes = None
    if "mano_pose" in arrays:
        models, note = hand_models_for(store, mano_dir)
        notes.append(note)
        if models is not None:
            meshes = {side: models[side].forward(arrays["mano_pose"][:, s], arrays["mano_betas"][s],
                                                 arrays["mano_trans"][:, s])[0] for s, side in enumerate(SIDES)}
    posed = None
    if {"points", "obj_rot", "obj_trans", "obj_scale"} <= set(arrays):
        posed = pose_points(arrays["points"], arrays["obj_rot"], arrays["obj_trans"], arrays["obj_scale"])
    if "K" in arrays and not np.any(arrays["K"]):
        notes.append("camera unknown (K all zero): no camera in the 3D view")
    if skipped:
        notes.append("not shown: " + ", ".join(skipped))

    rec = rr.RecordingStream("manivideo_view", recording_id=f"{_name(store)}:{index}")
    tmp = Path(f"{save}.partial") if save is not None else None
    try:
        image_hw = tuple(reader.group["rgb"].shape[2:4]) if "rgb" in names else None
        log = _Logger(rr, rec, arrays, layers, tau, image_hw)
        refs = (list(REF_VIEW_NAMES) if "ref_views" in names else []) + (["background"] if "background" in names else [])
        frames = [n for n in per_other if reader.group[n].ndim == 5 or reader.group[n].dtype in (np.uint8, np.bool_)]
        has_3d = bool({"cam_pose", "points", "mano_pose"} & set(names)) or bool(np.any(arrays.get("K", 0)))
        bp = blueprint(layers, refs + static_other, frames, has_3d)
        if tmp is not None:
            rec.save(str(tmp), default_blueprint=bp)
        else:
            _spawn_viewer(rr, rec, bp)
        log.static(reader.key(index), reader.attrs(index), notes)
        for name in static_other:
            log.log(f"refs/{name}", rr.Image(arrays[name]), static=True)
        for t in tqdm(range(T), desc="view", disable=not progress, dynamic_ncols=True):
            rec.set_time("frame", sequence=t)
            big = reader.read(index, names=[n for n in names if n in per_frame_names], frames=slice(t, t + 1))
            if "rgb" in big:
                log.log("world/camera/image/rgb", rr.Image(big["rgb"][0]))
            if "mlo_depth" in big:
                log.frame_layers(t, big["mlo_normal"][0], big["mlo_depth"][0])
            log.frame_hands(t, meshes, models)
            log.frame_object(t, posed)
            for name in per_other:
                log.frame_other(t, name, arrays[name])
        rec.flush(timeout_sec=1e38 if tmp is not None else 20.0)
        rec.disconnect()
        if tmp is not None:
            os.replace(tmp, save)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    where = f"wrote {save}" if save is not None else "sent to the Rerun viewer"
    return (f"{where}: sample {index} ({reader.key(index)}) of {store}, {T} frames, {len(log.entities)} entities, "
            f"{len(layers)} layers" + "".join(f"; {n}" for n in notes[1:]))
