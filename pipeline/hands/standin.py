"""The stand-in hand (not MANO): a hand model the project generates, for users without a MANO licence.

It has MANO's array format and forward interface, so it runs through the very same smplx
code path as MANO: 778 vertices, 1538 faces, 16 joints with MANO's kinematic tree and
joint numbering, skinning weights, a joint regressor, 10 shape directions, (zero) pose
correctives, 45x45 ``hands_components`` and a 45-d ``hands_mean``; fingertips sit at
MANO's fingertip vertex ids. Geometry: a rounded-box palm and five tubes (thumb, index,
middle, ring, pinky), each tube three rigid phalanges blended at the joints.

Frame (right hand, metres): wrist (joint 0) at the origin, fingers along +x, palm facing
-y, thumb towards +z. The left hand is the exact mirror (x -> -x), with mirrored shape
directions and mirrored pose components, so the same PCA coefficients give mirror poses.

``hands_components`` is a fixed random orthogonal 45x45 matrix (seeded), so
``pca = relative_pose @ components.T`` inverts ``relative_pose = pca @ components`` exactly
(``make-demo-hoi`` relies on this to write DexYCB-style 45-d PCA ``pose_m``).
"""

from __future__ import annotations

import functools

import numpy as np

from pipeline.hands.parts import MANO_PARENTS, TIP_VERTEX_IDS

STANDIN_NAME = "stand-in hand (not MANO)"
N_VERTS, N_FACES = 778, 1538
RING = 8            # vertices per tube ring
BLEND = 0.004       # m, skinning blend half-width at a joint
MIRROR_AA = np.array([1.0, -1.0, -1.0])  # axis-angle under the x -> -x mirror

# finger: (joint ids, base point, direction, segment lengths, radius); tip order matches TIP_VERTEX_IDS[side]
_FINGERS = {
    "thumb": ((13, 14, 15), (0.022, -0.006, 0.030), (1.0, -0.35, 1.1), (0.034, 0.030, 0.026), 0.0105),
    "index": ((1, 2, 3), (0.092, 0.0, 0.030), (1.0, 0.0, 0.06), (0.040, 0.024, 0.020), 0.0088),
    "middle": ((4, 5, 6), (0.095, 0.0, 0.010), (1.0, 0.0, 0.0), (0.045, 0.028, 0.021), 0.0090),
    "ring": ((10, 11, 12), (0.092, 0.0, -0.010), (1.0, 0.0, -0.05), (0.042, 0.026, 0.020), 0.0085),
    "pinky": ((7, 8, 9), (0.085, 0.0, -0.029), (1.0, 0.0, -0.12), (0.032, 0.020, 0.018), 0.0075),
}
_TIP_FINGER_ORDER = ("thumb", "index", "middle", "ring", "pinky")


def _palm(n_lat: int = 11, n_lon: int = 26):
    """Rounded box (superellipsoid) from the wrist (x=0) to the knuckles (x=0.1): V = n_lat*n_lon+2."""
    centre, half = np.array([0.05, 0.0, 0.0]), np.array([0.05, 0.016, 0.044])
    e = 0.55

    def spow(x, p):
        return np.sign(x) * np.abs(x) ** p

    verts = [centre - [half[0], 0, 0]]  # wrist pole = joint 0
    for i in range(1, n_lat + 1):
        th = np.pi * i / (n_lat + 1)
        for k in range(n_lon):
            ph = 2 * np.pi * k / n_lon
            r = spow(np.sin(th), e)
            verts.append(centre + half * [-spow(np.cos(th), e), r * spow(np.sin(ph), e), r * spow(np.cos(ph), e)])
    verts.append(centre + [half[0], 0, 0])
    v = np.array(verts)
    faces = []
    last = len(v) - 1
    for k in range(n_lon):
        k2 = (k + 1) % n_lon
        faces.append((0, 1 + k2, 1 + k))
        base = 1 + (n_lat - 1) * n_lon
        faces.append((last, base + k, base + k2))
    for i in range(n_lat - 1):
        for k in range(n_lon):
            k2 = (k + 1) % n_lon
            a, b = 1 + i * n_lon + k, 1 + i * n_lon + k2
            faces += [(a, b, b + n_lon), (a, b + n_lon, a + n_lon)]
    f = np.array(faces)
    # orient outwards (convex shape: face normal away from the centre)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flip = np.einsum("ij,ij->i", n, v[f].mean(axis=1) - centre) < 0
    f[flip] = f[flip][:, ::-1]
    return v, f


def _finger(joint_ids, base, direction, lengths, radius):
    """Tube of 12 rings + 2 cap vertices. Returns vertices, faces, weights [V,16], the vertex
    index of each joint ring (for the regressor), the tip vertex index, arclength per vertex."""
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d)
    v_ax = np.array([0.0, 1.0, 0.0]) - d[1] * d
    v_ax /= np.linalg.norm(v_ax)
    u_ax = np.cross(v_ax, d)
    p, m, t = lengths
    s_rings = [-0.012, 0.0, p / 4, p / 2, 3 * p / 4, p, p + m / 3, p + 2 * m / 3, p + m,
               p + m + t / 3, p + m + 2 * t / 3, p + m + 0.9 * t]
    total = p + m + t
    joint_s = (0.0, p, p + m)
    bones = (0,) + tuple(joint_ids)  # bone before joint_s[k] is bones[k], after is bones[k+1]
    base = np.asarray(base, float)
    angles = 2 * np.pi * np.arange(RING) / RING
    verts, weights, arc = [], [], []

    def weight(s):
        w = np.zeros(16)
        k = int(np.searchsorted(joint_s, s, side="right"))  # bones[k] owns s away from joints
        w[bones[k]] = 1.0
        for j, sj in enumerate(joint_s):
            if abs(s - sj) < BLEND:
                tt = (s - (sj - BLEND)) / (2 * BLEND)
                w[:] = 0
                w[bones[j]] += 1 - tt
                w[bones[j + 1]] += tt
        return w

    for i, s in enumerate(s_rings):
        r = radius * (1 - 0.22 * max(s, 0) / total) * (0.72 if i == len(s_rings) - 1 else 1.0)
        c = base + d * s
        for a in angles:
            verts.append(c + r * (np.cos(a) * u_ax + np.sin(a) * v_ax))
            weights.append(weight(s))
            arc.append(s)
    verts.append(base + d * (s_rings[0] - 0.004))
    weights.append(weight(s_rings[0]))
    arc.append(s_rings[0])
    verts.append(base + d * total)  # fingertip
    w_tip = np.zeros(16)
    w_tip[joint_ids[2]] = 1
    weights.append(w_tip)
    arc.append(total)
    n_r = len(s_rings)
    bcap, tip = n_r * RING, n_r * RING + 1
    faces = []
    for i in range(n_r - 1):
        for k in range(RING):
            k2 = (k + 1) % RING
            a, b, c_, dd = i * RING + k, i * RING + k2, (i + 1) * RING + k2, (i + 1) * RING + k
            faces += [(a, b, c_), (a, c_, dd)]
    last = (n_r - 1) * RING
    for k in range(RING):
        k2 = (k + 1) % RING
        faces.append((last + k, last + k2, tip))
        faces.append((k2, k, bcap))
    joint_rings = {joint_ids[0]: 1 * RING, joint_ids[1]: 5 * RING, joint_ids[2]: 8 * RING}
    return (np.array(verts), np.array(faces), np.array(weights), joint_rings, tip, np.array(arc), d)


@functools.lru_cache(maxsize=2)
def _right_arrays() -> dict:
    """The right stand-in hand in MANO's format (vertex order already MANO-sized)."""
    pv, pf = _palm()
    verts, faces, weights = [pv], [pf], [np.eye(16)[np.zeros(len(pv), int)]]
    regressor = np.zeros((16, N_VERTS))
    regressor[0, 0] = 1.0  # wrist pole of the palm
    shape = [np.zeros((len(pv), 3, 10))]
    shape[0][:, 2, 2] = pv[:, 2] * 0.06          # beta2: palm width
    shape[0][:, 1, 3] = pv[:, 1] * 0.12          # beta3: thickness
    offset = len(pv)
    tips = {}
    for name, (jids, base, direction, lengths, radius) in _FINGERS.items():
        v, f, w, rings, tip, arc, d = _finger(jids, base, direction, lengths, radius)
        verts.append(v)
        faces.append(f + offset)
        weights.append(w)
        for j, first in rings.items():
            regressor[j, offset + first: offset + first + RING] = 1.0 / RING
        sd = np.zeros((len(v), 3, 10))
        sd[:, :, 1] = np.maximum(arc, 0)[:, None] * d * 0.10   # beta1: finger length
        sd[:, 2, 2] = v[:, 2] * 0.06
        axis_pt = np.asarray(base) + np.outer(arc, d)
        sd[:, :, 3] = (v - axis_pt) * 0.12                        # beta3: thickness
        shape.append(sd)
        tips[name] = offset + tip
        offset += len(v)
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    f = np.concatenate([f, pf[:N_FACES - len(f)]])  # pad to MANO's 1538 faces with duplicate palm faces
    w = np.concatenate(weights)
    sd = np.concatenate(shape)
    sd[:, :, 0] = v * 0.03                                       # beta0: overall size about the wrist
    assert len(v) == N_VERTS and len(f) == N_FACES, (len(v), len(f))
    # permute vertices so fingertips sit at MANO's tip vertex ids
    old_tips = [tips[n] for n in _TIP_FINGER_ORDER]
    order = np.full(N_VERTS, -1)
    order[list(TIP_VERTEX_IDS["right"])] = old_tips
    rest = [i for i in range(N_VERTS) if i not in set(old_tips)]
    order[order < 0] = rest
    inv = np.empty(N_VERTS, int)
    inv[order] = np.arange(N_VERTS)
    rng = np.random.default_rng(20250101)
    comps, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    mean = np.zeros((15, 3))
    mean[:12, 2] = -0.12   # fingers slightly flexed (towards the palm, -y)
    mean[12:, 1] = 0.08    # thumb slightly in
    return {
        "v_template": v[order], "f": inv[f].astype(np.uint32), "weights": w[order],
        "J_regressor": regressor[:, order], "kintree_table": np.stack([np.where(MANO_PARENTS < 0, 2**32 - 1, MANO_PARENTS),
                                                                       np.arange(16)]).astype(np.int64),
        "shapedirs": sd[order], "posedirs": np.zeros((N_VERTS, 3, 135)),
        "hands_components": comps.T.copy(), "hands_mean": mean.reshape(45),
    }


def mirror_pose(pose: np.ndarray) -> np.ndarray:
    """Axis-angle poses [..., 3k] mirrored through the x = 0 plane (right <-> left)."""
    p = np.asarray(pose, float)
    return (p.reshape(*p.shape[:-1], -1, 3) * MIRROR_AA).reshape(p.shape)


def standin_arrays(side: str, left_shapedirs_as_mano: bool = False) -> dict:
    """MANO-format arrays (float64 / int) of the stand-in hand for ``side`` ("left"/"right").

    ``left_shapedirs_as_mano``: give the left hand the *right* hand's shape directions, the
    way the MANO_LEFT file ships them (see pipeline.hands.mano_loading); used to build fake
    MANO files for tests. The stand-in model itself uses properly mirrored ones.
    """
    r = _right_arrays()
    if side == "right":
        return {k: np.array(v) for k, v in r.items()}
    if side != "left":
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    flip = np.array([-1.0, 1.0, 1.0])
    sd = r["shapedirs"].copy()
    if not left_shapedirs_as_mano:
        sd = sd * flip[None, :, None]
    # the mirror image, with the fingertips at MANO_LEFT's tip vertices (middle tip 445, not 444)
    perm = np.arange(N_VERTS)
    for a, b in zip(TIP_VERTEX_IDS["left"], TIP_VERTEX_IDS["right"], strict=True):
        perm[a], perm[b] = perm[b], perm[a]
    inv = np.argsort(perm)
    return {
        "v_template": (r["v_template"] * flip)[perm], "f": inv[r["f"][:, ::-1]].astype(np.uint32),
        "weights": r["weights"][perm], "J_regressor": r["J_regressor"][:, perm],
        "kintree_table": r["kintree_table"].copy(), "shapedirs": sd[perm], "posedirs": r["posedirs"][perm],
        "hands_components": mirror_pose(r["hands_components"]), "hands_mean": mirror_pose(r["hands_mean"]),
    }
