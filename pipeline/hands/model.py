"""A hand model (MANO or the stand-in) behind one forward interface, run through smplx.

Pose convention everywhere in the project (and in the store's ``mano_pose``): 48 numbers,
3 global axis-angle + 15 finger joints x 3 axis-angle, *absolute* (the model's
``hands_mean`` already added; a flat hand is all zeros). smplx is called with
``use_pca=False, flat_hand_mean=False`` and ``hand_pose = pose[3:] - hands_mean`` (smplx adds
the mean back); note smplx silently turns PCA off at 45 components, so PCA coefficients
are converted here (``pca_to_pose``), never passed to smplx.

Units: metres. ``forward`` returns vertices [N,778,3] and 21 joints [N,21,3] (DexYCB
order, see ``parts.JOINT21_ORDER``) in the frame the pose/trans are given in.
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass, field

import numpy as np

from pipeline.hands import parts
from pipeline.hands.standin import STANDIN_NAME, standin_arrays

GL_FROM_CV = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes (y down, z forward) -> OpenGL


@dataclass
class HandModel:
    """One hand side of one model. ``arrays``: MANO-format arrays (see mano_loading.REQUIRED)."""

    side: str
    name: str
    arrays: dict
    source: str = ""
    faces: np.ndarray = field(init=False)          # [F,3] int64, sorted by part
    part_ranges: dict = field(init=False)          # part -> (first_face, n_faces) in ``faces``

    def __post_init__(self):
        self.faces, self.part_ranges = parts.sort_faces_by_part(self.arrays["weights"], self.arrays["f"])
        self.hands_components = np.asarray(self.arrays["hands_components"], np.float64)  # [45,45] rows
        self.hands_mean = np.asarray(self.arrays["hands_mean"], np.float64)              # [45]

    @functools.cached_property
    def _smplx(self):
        import smplx
        import torch
        from smplx.utils import Struct

        data = dict(self.arrays)
        data["f"] = np.asarray(data["f"], np.int64)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a shape-space warning
            model = smplx.MANO(model_path="", data_struct=Struct(**data), is_rhand=self.side == "right",
                               use_pca=False, flat_hand_mean=False, num_pca_comps=45, batch_size=1,
                               dtype=torch.float64)
        return model.eval()

    # -- parameters -------------------------------------------------------------------
    def pca_to_pose(self, global_orient: np.ndarray, pca: np.ndarray) -> np.ndarray:
        """Absolute pose [N,48] from global axis-angle [N,3] and 45 PCA coefficients [N,45]
        (DexYCB / manopth: relative pose = pca @ hands_components, plus hands_mean)."""
        rel = np.asarray(pca, np.float64) @ self.hands_components
        return np.concatenate([np.asarray(global_orient, np.float64), rel + self.hands_mean], axis=-1)

    def pose_to_pca(self, pose: np.ndarray) -> np.ndarray:
        """Inverse of ``pca_to_pose`` for the 45 finger numbers (exact when components are orthonormal)."""
        rel = np.asarray(pose, np.float64)[..., 3:] - self.hands_mean
        return rel @ np.linalg.pinv(self.hands_components)

    def rest_root(self, betas: np.ndarray) -> np.ndarray:
        """Joint 0 (wrist) [3] of the shaped hand before pose and translation: the global
        rotation turns the hand about this point."""
        a = self.arrays
        v = a["v_template"] + a["shapedirs"] @ np.asarray(betas, np.float64)
        return a["J_regressor"][0] @ v

    # -- forward ----------------------------------------------------------------------
    def forward(self, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pose [N,48] absolute axis-angle, betas [10] or [N,10], trans [N,3] (m)
        -> vertices [N,778,3], joints [N,21,3], float64 metres."""
        import torch

        pose = np.atleast_2d(np.asarray(pose, np.float64))
        n = len(pose)
        betas = np.broadcast_to(np.asarray(betas, np.float64), (n, 10))
        trans = np.broadcast_to(np.asarray(trans, np.float64), (n, 3))
        t = lambda x: torch.tensor(np.array(x, np.float64))  # noqa: E731
        with torch.no_grad():
            out = self._smplx(betas=t(betas), global_orient=t(pose[:, :3]),
                              hand_pose=t(pose[:, 3:] - self.hands_mean), transl=t(trans))
        verts = out.vertices.numpy()
        return verts, parts.joints21(out.joints.numpy(), verts, self.side)


def transform_mano(model: HandModel, pose: np.ndarray, trans: np.ndarray, betas: np.ndarray,
                   transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MANO parameters of the same hand after moving it by ``transform`` [4,4] (a rotation,
    possibly improper like the OpenCV->OpenGL axis flip, plus a translation), or by one
    transform per row, [N,4,4] (a moving camera: world -> camera of each frame).

    MANO rotates about the rest wrist j0: x = R (v - j0) + j0 + t. With x' = G x + g:
    R' = G R and t' = G (j0 + t) + g - j0. pose [N,48], trans [N,3] -> same shapes.
    G must be a proper rotation (det +1); diag(1,-1,-1) is one (pi about x).
    """
    from scipy.spatial.transform import Rotation

    G = np.asarray(transform, np.float64)
    pose = np.array(pose, np.float64)
    j0 = model.rest_root(betas)
    rot = Rotation.from_rotvec(pose[:, :3]).as_matrix()
    Gr, Gt = G[..., :3, :3], G[..., :3, 3]
    pose[:, :3] = Rotation.from_matrix(Gr @ rot).as_rotvec()
    trans = np.einsum("...ij,...j->...i", Gr, np.asarray(trans, np.float64) + j0) + Gt - j0
    return pose, trans


def cv_to_gl(model: HandModel, pose: np.ndarray, trans: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MANO parameters given in an OpenCV camera frame re-expressed in the OpenGL camera frame
    (points map by x_gl = diag(1,-1,-1) x_cv, a proper rotation by pi about x)."""
    G = np.eye(4)
    G[:3, :3] = GL_FROM_CV
    return transform_mano(model, pose, trans, betas, G)


@functools.lru_cache(maxsize=8)
def standin_hand(side: str) -> HandModel:
    """The stand-in hand (not MANO) of ``side``."""
    return HandModel(side=side, name=STANDIN_NAME, arrays=standin_arrays(side), source="generated")


@functools.lru_cache(maxsize=8)
def mano_hand(mano_dir: str, side: str, fix_left_shapedirs: bool = False) -> HandModel:
    """The user's MANO model of ``side`` (UserError if the files are missing or wrong)."""
    from pipeline.hands.mano_loading import load_mano_arrays

    arrays, path = load_mano_arrays(mano_dir, side, fix_left_shapedirs)
    return HandModel(side=side, name="MANO", arrays=arrays, source=str(path))


def hand_models(kind: str, mano_dir: str | None = None, fix_left_shapedirs: bool = False) -> dict[str, HandModel]:
    """{"left": HandModel, "right": HandModel} for ``kind`` "mano" or "stand-in"."""
    from pipeline.errors import UserError

    if kind == "stand-in":
        return {s: standin_hand(s) for s in ("left", "right")}
    if kind == "mano":
        if not mano_dir:
            raise UserError("--hand-model mano needs --mano-dir (folder with MANO_RIGHT/MANO_LEFT .pkl from "
                            "https://mano.is.tue.mpg.de), or use --hand-model stand-in")
        return {s: mano_hand(str(mano_dir), s, fix_left_shapedirs) for s in ("right", "left")}
    raise UserError(f"--hand-model must be 'mano' or 'stand-in', got {kind!r}")
