"""The store contract between the pipeline (writer) and the trainer (reader).

A store is one Zarr v3 group on disk. Every per-sample array has the sample axis first
(N samples), is sharded along that axis (one shard = ``samples_per_shard`` consecutive
samples = what one pipeline task writes) and chunked inside the shard by what one read
needs (usually one frame of one layer). One *sample* is one clip of T frames at a square
resolution R.

Coordinate conventions (all arrays):
  * camera frame: OpenGL (x right, y up, z toward the viewer; the camera looks down -z);
  * ``mlo_depth`` is the positive distance along the viewing axis (-z_cam), metres for HOI
    data and canonical "scene units" for Objaverse (object fits a unit-diameter sphere);
  * normals are camera-space unit vectors encoded as uint8 ``round((n + 1) / 2 * 255)``;
  * quaternions are (x, y, z, w), object-to-world; ``cam_pose`` is camera-to-world.

Layers have a fixed semantic order (``LAYER_NAMES``). A store records which layers it
carries (``layers`` attribute, a subset of ``LAYER_NAMES`` in that order); the trainer
zero-fills the others. Inside a stored layer, a frame where the layer is absent is all
zero: a frame where every layer is absent is an all-zero chunk, which Zarr does not write to
disk (``write_empty_chunks=False``); an absent layer inside a written frame compresses to a
few bytes.

Per-sample attributes: a sample may carry ``SAMPLE_ATTRS`` ("attrs"), a small JSON-able
dict of figures about it (quality measures, label agreement, source ids). It is not an
array: the writer keeps it in the shard's completion marker beside the sample's row, and
``StoreReader.attrs(i)`` returns it.

Store kinds (``STORE_KINDS``; each array names the kinds that carry it):
  * ``objaverse``: rendered objects; the object layer, views, points, trajectory, K, pose.
  * ``hoi``: hand-object video crops; all 13 layers plus MANO, joints and the object.
  * ``human`` (schema v2): person video crops. Per sample: ``rgb`` (a square crop that follows
    the person, fixed per clip), ``background`` = O_B (a frame of the same person chosen away
    from the clip, cropped around the person), ``skeleton`` S (OpenPose-style coloured limbs
    and hand bones drawn from the keypoints), ``keypoints`` (``N_HUMAN_KEYPOINTS`` = 67 in the
    order ``HUMAN_KEYPOINT_NAMES``: OpenPose BODY_25, then the 21 left-hand and 21 right-hand
    joints of OpenPose's hand model; x, y in the stored image's pixels with pixel centres at
    +0.5, confidence in [0, 1]; a missing joint is (-1, -1, 0)), ``person_mask`` (the
    dataset's person mask; all zero when the dataset has none: the sample's attrs say
    ``has_person_mask``) and ``K`` (all zero when the source camera is unknown). A human
    store has no layers (``layers == ()``), no MLO arrays, no object arrays: the trainer
    zero-fills them.

What the ``hoi`` object layer holds for an articulated object (ARCTIC: a top and a bottom part
and an articulation angle): the ``object`` layer draws the whole object as it is in each frame,
every part posed and articulated per frame, exactly as the dataset's object model places it.
``ref_views``, ``points``/``point_normals`` and ``obj_rot``/``obj_trans``/``obj_scale`` describe
the object *at rest* (articulation 0, the template as the dataset ships it), placed by the pose
of its rigid base part; the articulation itself is in no array, only in the layer.

With several manipulated objects (TACO: a tool and a target object), the ``object`` layer draws
all of them, each rigid and posed per frame as the dataset places it. ``ref_views``, ``points``/
``point_normals`` and ``obj_rot``/``obj_trans``/``obj_scale`` describe one of them, the *tool*
(the object the hand uses on the other); the target object is in the layer only. ``obj_scale``
is in metres whatever unit the dataset's mesh file uses (TACO's are centimetres).

Which crop pixels are real (v4): an HOI or human crop may reach outside the camera image (a
crop larger than the image; a dataset's own crop put back in its frame; the corners of an
undistorted lens view), where ``rgb`` and ``background`` are black. ``valid`` [T,R,R] says which
pixels come from the camera image; the trainer masks its loss and ``evaluate`` its metrics with
it; an Objaverse store has no ``valid`` (everything is rendered: all valid). The MLO layers are
drawn over invalid pixels as everywhere else (the conditions are complete; only the target is
missing there). ``hand_inside`` [T,2] is the fraction of each hand's mesh vertices that project
inside the camera image (onto a valid source pixel), so a user can filter out frames where a hand
is mostly out of view.

Bump ``SCHEMA_VERSION`` on any change to names, shapes, dtypes, units or meaning
(v2: the ``human`` kind; v3: the layer maps ``mlo_normal``/``mlo_depth`` are chunked per frame,
all layers of a frame in one chunk (1, L, R, R[, 3]) instead of one chunk per frame and layer: a
T-frame clip is T chunk reads instead of T x L; and only Zarr v3 core / registered codecs are used,
no numcodecs delta filter: see ``pipeline.engine.shard_writer.codecs_for``; v4: ``valid`` (hoi,
human) and ``hand_inside`` (hoi); crops shift to stay inside the image; ARCTIC's articulated part
is the one its toolkit's code turns). Older versions: an Objaverse store of v3 is read as it is
(its contract did not change); v3 hoi and human stores are refused with a one-line message saying
how to remake them -- their crops may hold unmarked black padding (and ARCTIC ones the wrong lid),
which "all valid" would silently train on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SCHEMA_NAME = "manivideo.store"
SCHEMA_VERSION = 4
# older versions still read, by store kind (see the module doc)
READABLE_OLDER = {3: frozenset({"objaverse"})}

HANDS = ("left", "right")
HAND_PARTS = ("palm", "thumb", "index", "middle", "ring", "pinky")
LAYER_NAMES = ("object",) + tuple(f"{h}_{p}" for h in HANDS for p in HAND_PARTS)
N_LAYERS = len(LAYER_NAMES)  # 13

REF_VIEW_NAMES = ("front", "back", "left", "right", "top", "bottom")
N_POINTS = 2048
N_JOINTS = 21
MANO_POSE_DIM = 48  # 3 global axis-angle + 15 joints x 3 axis-angle
MANO_BETAS_DIM = 10

STORE_KINDS = ("objaverse", "hoi", "human")
COMMON = frozenset({"objaverse", "hoi"})
HOI = frozenset({"hoi"})
HUMAN = frozenset({"human"})
CAMERA = frozenset({"hoi", "human"})  # crops of real camera images
ALL_KINDS = frozenset(STORE_KINDS)

# OpenPose BODY_25 (doc/02_output.md), then OpenPose's 21-joint hand model per hand
# (wrist, then thumb/index/middle/ring/pinky from base to tip), left hand first.
BODY_25_NAMES = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
                 "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
                 "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")
HAND_21_NAMES = ("Wrist",) + tuple(f"{f}{k}" for f in ("Thumb", "Index", "Middle", "Ring", "Pinky")
                                   for k in range(1, 5))
HUMAN_KEYPOINT_NAMES = BODY_25_NAMES + tuple(f"LHand{n}" for n in HAND_21_NAMES) + tuple(
    f"RHand{n}" for n in HAND_21_NAMES)
N_HUMAN_KEYPOINTS = len(HUMAN_KEYPOINT_NAMES)  # 67


SAMPLE_ATTRS = "attrs"


class SchemaError(ValueError):
    """A store or a sample does not follow the contract. The message is one line."""


@dataclass(frozen=True)
class ArraySpec:
    """One per-sample array of the contract.

    ``shape`` and ``chunk`` are per sample (without the leading N axis); entries are ints
    or the symbols "T" (frames), "L" (stored layers), "R" (resolution).
    """

    name: str
    shape: tuple
    dtype: str
    chunk: tuple
    unit: str
    doc: str
    kinds: frozenset = COMMON
    codec: str = "image"  # "image" | "normal" | "depth" | "small": see pipeline.engine.shard_writer.codecs_for

    def resolve(self, frames: int, resolution: int, n_layers: int) -> tuple[tuple, tuple]:
        """Concrete (shape, chunk) for one sample."""
        sub = {"T": frames, "R": resolution, "L": n_layers}
        shape = tuple(sub.get(s, s) for s in self.shape)
        chunk = tuple(sub.get(s, s) for s in self.chunk)
        return shape, chunk


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("rgb", ("T", "R", "R", 3), "uint8", (1, "R", "R", 3), "sRGB 0-255",
              "target frames: rendered (Objaverse) or real camera crops (HOI, human)", kinds=ALL_KINDS),
    ArraySpec("mlo_normal", ("T", "L", "R", "R", 3), "uint8", (1, "L", "R", "R", 3), "(n+1)/2*255",
              "occlusion-free camera-space normals of each layer rendered alone; 0 where absent",
              codec="normal"),
    ArraySpec("mlo_depth", ("T", "L", "R", "R"), "float16", (1, "L", "R", "R"), "m (scene units for Objaverse)",
              "per-layer camera z-depth (positive, along -z_cam); 0 = layer absent at pixel",
              codec="depth"),
    ArraySpec("layer_present", ("T", "L"), "bool", ("T", "L"), "",
              "layer k covers at least one pixel in frame t", codec="small"),
    ArraySpec("ref_views", (6, "R", "R", 3), "uint8", (6, "R", "R", 3), "sRGB 0-255",
              "object appearance O_I in canonical pose: front, back, left, right, top, bottom"),
    ArraySpec("background", ("R", "R", 3), "uint8", ("R", "R", 3), "sRGB 0-255",
              "scene / human reference O_B", kinds=ALL_KINDS),
    ArraySpec("points", (N_POINTS, 3), "float32", (N_POINTS, 3), "canonical object units",
              "surface points P, object canonical frame", codec="small"),
    ArraySpec("point_normals", (N_POINTS, 3), "float32", (N_POINTS, 3), "unit vectors",
              "outward surface normals at P, object canonical frame", codec="small"),
    ArraySpec("obj_rot", ("T", 4), "float32", ("T", 4), "quaternion x,y,z,w",
              "object-to-world rotation per frame (trajectory Q)", codec="small"),
    ArraySpec("obj_trans", ("T", 3), "float32", ("T", 3), "m (scene units for Objaverse)",
              "object-to-world translation per frame (trajectory L)", codec="small"),
    ArraySpec("obj_scale", (1,), "float32", (1,), "m per canonical unit (scene units for Objaverse)",
              "size of the canonical object: world point = R(obj_rot) @ (obj_scale * p) + obj_trans",
              codec="small"),
    ArraySpec("K", (3, 3), "float32", (3, 3), "pixels",
              "intrinsics of the stored (cropped, resized) image; pixel centres at +0.5; "
              "all zero = unknown (human)",
              kinds=ALL_KINDS, codec="small"),
    ArraySpec("cam_pose", (4, 4), "float32", (4, 4), "m",
              "camera-to-world pose, OpenGL camera axes", codec="small"),
    # HOI only
    ArraySpec("mano_pose", ("T", 2, MANO_POSE_DIM), "float32", ("T", 2, MANO_POSE_DIM), "rad, axis-angle",
              "MANO pose per hand (left, right): 3 global + 45 finger, full (not PCA), in the camera frame",
              kinds=HOI, codec="small"),
    ArraySpec("mano_betas", (2, MANO_BETAS_DIM), "float32", (2, MANO_BETAS_DIM), "",
              "MANO shape per hand (left, right)", kinds=HOI, codec="small"),
    ArraySpec("mano_trans", ("T", 2, 3), "float32", ("T", 2, 3), "m",
              "MANO translation per hand, camera frame", kinds=HOI, codec="small"),
    ArraySpec("hand_valid", ("T", 2), "bool", ("T", 2), "",
              "hand annotation valid in frame t (left, right)", kinds=HOI, codec="small"),
    ArraySpec("joints_3d", ("T", 2, N_JOINTS, 3), "float32", ("T", 2, N_JOINTS, 3), "m",
              "21 hand joints per hand, camera frame; 0 where invalid", kinds=HOI, codec="small"),
    ArraySpec("joints_2d", ("T", 2, N_JOINTS, 2), "float32", ("T", 2, N_JOINTS, 2), "pixels",
              "21 hand joints projected into the stored image; -1 where invalid", kinds=HOI, codec="small"),
    ArraySpec("hand_inside", ("T", 2), "float32", ("T", 2), "fraction 0-1",
              "fraction of each hand's (left, right) mesh vertices that project inside the camera image "
              "(onto a valid source pixel) in frame t; 0 where the hand is not annotated", kinds=HOI, codec="small"),
    # HOI and human
    ArraySpec("valid", ("T", "R", "R"), "bool", (1, "R", "R"), "",
              "the pixel comes from the camera image (False: padding outside it, or outside what the dataset "
              "shows); the trainer's loss and evaluate's metrics are masked with it", kinds=CAMERA, codec="small"),
    # human only
    ArraySpec("skeleton", ("T", "R", "R", 3), "uint8", (1, "R", "R", 3), "sRGB 0-255",
              "skeleton map S: OpenPose-style coloured limbs and hand bones on black", kinds=HUMAN),
    ArraySpec("keypoints", ("T", N_HUMAN_KEYPOINTS, 3), "float32", ("T", N_HUMAN_KEYPOINTS, 3),
              "pixels, pixels, 0-1",
              "x, y (stored image, pixel centres at +0.5), confidence; HUMAN_KEYPOINT_NAMES order; "
              "(-1, -1, 0) where missing", kinds=HUMAN, codec="small"),
    ArraySpec("person_mask", ("T", "R", "R"), "bool", (1, "R", "R"), "",
              "the dataset's person mask; all false when it has none (attrs has_person_mask)", kinds=HUMAN,
              codec="small"),
)
ARRAY_BY_NAME: Mapping[str, ArraySpec] = {a.name: a for a in ARRAYS}


@dataclass(frozen=True)
class StoreLayout:
    """The concrete contract of one store: kind, T, R, stored layers, shard size."""

    kind: str
    frames: int
    resolution: int
    layers: tuple[str, ...]
    samples_per_shard: int

    def __post_init__(self):
        if self.kind not in STORE_KINDS:
            raise SchemaError(f"unknown store kind {self.kind!r}; expected one of {STORE_KINDS}")
        bad = [name for name in self.layers if name not in LAYER_NAMES]
        if bad:
            raise SchemaError(f"unknown layer names {bad}; expected names from {LAYER_NAMES}")
        if list(self.layers) != sorted(self.layers, key=LAYER_NAMES.index):
            raise SchemaError("layers must follow the fixed order of LAYER_NAMES")
        if self.kind == "human" and self.layers:
            raise SchemaError("a human store has no layers (layers must be empty)")
        if self.frames < 1 or self.resolution < 8 or self.samples_per_shard < 1:
            raise SchemaError("frames >= 1, resolution >= 8 and samples_per_shard >= 1 are required")

    @property
    def arrays(self) -> tuple[ArraySpec, ...]:
        return tuple(a for a in ARRAYS if self.kind in a.kinds)

    def sample_shape(self, name: str) -> tuple:
        return ARRAY_BY_NAME[name].resolve(self.frames, self.resolution, len(self.layers))[0]

    def chunk_shape(self, name: str) -> tuple:
        return ARRAY_BY_NAME[name].resolve(self.frames, self.resolution, len(self.layers))[1]

    def to_attrs(self) -> dict:
        return {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "frames": self.frames,
            "resolution": self.resolution,
            "layers": list(self.layers),
            "samples_per_shard": self.samples_per_shard,
            "arrays": {a.name: {"dtype": a.dtype, "unit": a.unit, "doc": a.doc} for a in self.arrays},
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> StoreLayout:
        if attrs.get("schema") != SCHEMA_NAME:
            raise SchemaError("not a manivideo store (group attribute 'schema' is missing or different)")
        version, kind = attrs.get("schema_version"), attrs.get("kind")
        if version != SCHEMA_VERSION and kind not in READABLE_OLDER.get(version, ()):
            how = {"hoi": "render-hoi", "human": "render-human"}.get(kind, "the pipeline")
            why = (" (it has no validity mask 'valid': its crops may hold unmarked black padding)"
                   if version == 3 and kind in CAMERA else "")
            raise SchemaError(f"store schema version {version} is not the supported {SCHEMA_VERSION}{why}; "
                              f"remake it with this version's {how}")
        return cls(kind=attrs["kind"], frames=int(attrs["frames"]), resolution=int(attrs["resolution"]),
                   layers=tuple(attrs["layers"]), samples_per_shard=int(attrs["samples_per_shard"]))


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or inf. float16 by its bits (numpy's float16 ufuncs convert each element: ~10x
    slower on a depth map): finite unless the 5 exponent bits are all set; one max() settles
    the usual case, every value non-negative and finite (bits below 0x7C00)."""
    if a.dtype == np.float16:
        bits = a.view(np.uint16)
        return bits.size == 0 or bits.max() < 0x7C00 or not ((bits & 0x7C00) == 0x7C00).any()
    return bool(np.isfinite(a).all())


def _any_negative(a: np.ndarray) -> bool:
    """Any value < 0 (finite values; -0.0 is not negative). float16 by its bits: sign set,
    magnitude not zero (bits above 0x8000)."""
    if a.dtype == np.float16:
        return a.size > 0 and bool(a.view(np.uint16).max() > 0x8000)
    return bool((a < 0).any())


def validate_sample(layout: StoreLayout, sample: Mapping[str, np.ndarray]) -> None:
    """Raise SchemaError (one line) unless ``sample`` holds every array of the layout with the
    contract's shape and dtype, finite floats, unit quaternions and unit point normals."""
    for spec in layout.arrays:
        if spec.name not in sample:
            raise SchemaError(f"sample is missing array {spec.name!r}")
        arr = np.asarray(sample[spec.name])
        want = layout.sample_shape(spec.name)
        if arr.shape != want:
            raise SchemaError(f"{spec.name}: shape {arr.shape}, contract says {want}")
        if arr.dtype != np.dtype(spec.dtype):
            raise SchemaError(f"{spec.name}: dtype {arr.dtype}, contract says {spec.dtype}")
        if arr.dtype.kind == "f" and not _all_finite(arr):
            raise SchemaError(f"{spec.name}: contains NaN or inf")
    if not isinstance(sample.get(SAMPLE_ATTRS, {}), Mapping):
        raise SchemaError(f"sample {SAMPLE_ATTRS!r} must be a dict")
    extra = set(sample) - {a.name for a in layout.arrays} - {SAMPLE_ATTRS}
    if extra:
        raise SchemaError(f"sample has arrays outside the contract: {sorted(extra)}")
    if layout.kind == "human":
        kp = np.asarray(sample["keypoints"])
        if ((kp[..., 2] < 0) | (kp[..., 2] > 1)).any():
            raise SchemaError("keypoints: confidence must be in [0, 1]")
        return
    q = np.asarray(sample["obj_rot"], dtype=np.float64)
    if np.abs(np.linalg.norm(q, axis=-1) - 1).max() > 1e-4:
        raise SchemaError("obj_rot: quaternions are not unit length")
    if not (np.asarray(sample["obj_scale"]) > 0).all():
        raise SchemaError("obj_scale: must be > 0")
    pn = np.asarray(sample["point_normals"], dtype=np.float64)
    if np.abs(np.linalg.norm(pn, axis=-1) - 1).max() > 1e-3:
        raise SchemaError("point_normals: not unit length")
    if _any_negative(np.asarray(sample["mlo_depth"])):
        raise SchemaError("mlo_depth: negative depth (0 marks absence, depth is positive)")
