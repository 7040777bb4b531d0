"""manopth's ``ManoLayer.forward`` in numpy, step by step, the tests' own port (the copy in
github.com/leolyliu/TACO-Instructions at c06f82c, ``dataset_utils/manopth/manopth/manolayer.py``;
dex-ycb-toolkit wraps the same manopth). Line numbers are of that file. The toolkits' MANO
conventions are pinned against this, not against the project's smplx forward pass.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

LEV1, LEV2, LEV3 = [1, 4, 7, 10, 13], [2, 5, 8, 11, 14], [3, 6, 9, 12, 15]
REORDER = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]   # L281


def manopth_forward(arrays: dict, side: str, pose_coeffs: np.ndarray, betas: np.ndarray, trans: np.ndarray | None = None,
                    use_pca: bool = True, ncomps: int = 6, flat_hand_mean: bool = True,
                    center_idx: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [N,778,3], joints [N,21,3]) in **millimetres**, as ``ManoLayer(use_pca, ncomps,
    flat_hand_mean, side, center_idx)(pose_coeffs, betas, trans)`` returns them; ``arrays``: the
    MANO pickle's arrays (v_template, shapedirs, posedirs, J_regressor, weights, hands_components,
    hands_mean)."""
    a = arrays
    pose_coeffs = np.atleast_2d(np.asarray(pose_coeffs, np.float64))
    n = len(pose_coeffs)
    comps = np.asarray(a["hands_components"], np.float64)[:ncomps if use_pca else 45]          # L112
    mean = np.zeros(45) if flat_hand_mean else np.asarray(a["hands_mean"], np.float64)       # L105-106
    hand = pose_coeffs[:, 3:3 + (ncomps if use_pca else 45)]                                  # L152-153
    full_hand = hand @ comps if use_pca else hand                                            # L154-158
    full_pose = np.concatenate([pose_coeffs[:, :3], mean + full_hand], axis=1)               # L161-164
    betas = np.broadcast_to(np.asarray(betas, np.float64), (n, 10))
    verts_out, joints_out = [], []
    for p, b in zip(full_pose, betas, strict=True):
        v_shaped = a["v_template"] + a["shapedirs"] @ b                                      # L202-204
        th_j = a["J_regressor"] @ v_shaped                                                   # L205
        rots = Rotation.from_rotvec(p.reshape(16, 3)).as_matrix()
        v_posed = v_shaped + a["posedirs"] @ (rots[1:] - np.eye(3)).reshape(-1)              # L208-209
        G = np.zeros((16, 4, 4))
        G[0] = np.block([[rots[0], th_j[0][:, None]], [np.zeros((1, 3)), 1]])                 # L214-215
        for lev, parents in ((LEV1, [0] * 5), (LEV2, LEV1), (LEV3, LEV2)):                   # L228-247
            for k, par in zip(lev, parents, strict=True):
                rel = np.block([[rots[k], (th_j[k] - th_j[par])[:, None]], [np.zeros((1, 3)), 1]])
                G[k] = G[par] @ rel
        A = G.copy()
        A[:, :3, 3] -= np.einsum("kij,kj->ki", G[:, :3, :3], th_j)                           # L253-255
        T = np.einsum("vk,kij->vij", a["weights"], A)                                        # L257
        verts = np.einsum("vij,vj->vi", T[:, :3, :3], v_posed) + T[:, :3, 3]                 # L259-267
        tips = verts[[745, 317, 444 if side == "right" else 445, 556, 673]]                  # L271-274
        jtr = np.concatenate([G[:, :3, 3], tips])[REORDER]                                   # L268, L278-281
        verts_out.append(verts)
        joints_out.append(jtr)
    verts, jtr = np.stack(verts_out), np.stack(joints_out)
    if trans is None or np.linalg.norm(trans) == 0:                                          # L283-287
        if center_idx is not None:
            c = jtr[:, center_idx:center_idx + 1]
            jtr, verts = jtr - c, verts - c
    else:                                                                                    # L288-290
        t = np.asarray(trans, np.float64).reshape(n, 1, 3)
        jtr, verts = jtr + t, verts + t
    return verts * 1000, jtr * 1000                                                          # L292-294
