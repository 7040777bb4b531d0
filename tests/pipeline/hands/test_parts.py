"""The 21-joint order and the fingertip vertices, pinned to manopth's and DexYCB's own numbers.

Numbers copied from the sources (not from our forward pass):

* hassony2/manopth @ 4f1dcad, ``manopth/manolayer.py``, ``ManoLayer.forward``:
  - lines 250-253: ``if self.side == 'right': tips = th_verts[:, [745, 317, 444, 556, 673]]``
    ``else: tips = th_verts[:, [745, 317, 445, 556, 673]]``
  - line 257: ``th_jtr = torch.cat([th_jtr, tips], 1)`` (16 MANO joints, then the 5 tips)
  - line 260: ``th_jtr = th_jtr[:, [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]]``
  - line 228: ``reorder_idxs`` puts the 16 joints in MANO's kintree order (0 wrist, 1-3 index,
    4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb).
* NVlabs/dex-ycb-toolkit @ 64551b0, ``dex_ycb_toolkit/dex_ycb.py`` lines 59-81 ``_MANO_JOINTS``
  (the order of ``joint_3d``/``joint_2d``, README "Each label file ..."): wrist, thumb_mcp,
  thumb_pip, thumb_dip, thumb_tip, index_mcp, ..., little_tip; ``layers/mano_layer.py`` builds
  its layer with ``ManoLayer(flat_hand_mean=False, ncomps=45, side=..., use_pca=True)``.
"""

import numpy as np

from pipeline.hands import parts
from pipeline.hands.model import standin_hand
from schemas import HAND_PARTS

MANOPTH_TIPS = {"right": [745, 317, 444, 556, 673], "left": [745, 317, 445, 556, 673]}
MANOPTH_REORDER = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
DEXYCB_JOINTS = [
    "wrist", "thumb_mcp", "thumb_pip", "thumb_dip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip",
    "ring_tip", "little_mcp", "little_pip", "little_dip", "little_tip",
]
# MANO kintree order of the 16 skeleton joints (manopth reorder_idxs / the MANO .pkl)
MANO16_FINGER = ["wrist"] + ["index"] * 3 + ["middle"] * 3 + ["little"] * 3 + ["ring"] * 3 + ["thumb"] * 3


def test_tip_vertices_and_order_are_manopths():
    assert [list(parts.tip_vertex_ids(s)) for s in ("right", "left")] == [MANOPTH_TIPS["right"], MANOPTH_TIPS["left"]]
    assert list(parts.JOINT21_ORDER) == MANOPTH_REORDER
    assert list(parts.JOINT21_NAMES) == DEXYCB_JOINTS


def test_joint_order_names_each_joint_by_its_finger():
    """Index i of the 21 joints comes from manopth joint MANOPTH_REORDER[i]: a MANO skeleton
    joint of the finger DexYCB names, or that finger's tip (16.. = thumb, index, middle, ring, little)."""
    tips = ["thumb", "index", "middle", "ring", "little"]
    for name, src in zip(DEXYCB_JOINTS, MANOPTH_REORDER, strict=True):
        finger = name.split("_")[0]
        assert (MANO16_FINGER[src] if src < 16 else tips[src - 16]) == finger, (name, src)
        assert name.endswith("_tip") == (src >= 16)
    # our own part table agrees with that kintree order (pinky = DexYCB's "little")
    assert [p.replace("pinky", "little") for p in parts.JOINT_PART[1:]] == MANO16_FINGER[1:]


def test_joints21_takes_each_sides_tips_in_manopths_order():
    """joints21 on labelled inputs: joint k of the 16 holds value k, vertex v holds 1000 + v."""
    j16 = np.repeat(np.arange(16.0)[:, None], 3, axis=1)[None]
    verts = np.repeat(1000.0 + np.arange(778)[:, None], 3, axis=1)[None]
    for side in ("right", "left"):
        j = parts.joints21(j16, verts, side)[0, :, 0]
        want = [float(k) if k < 16 else 1000.0 + MANOPTH_TIPS[side][k - 16] for k in MANOPTH_REORDER]
        assert j.tolist() == want
        assert j[12] == 1000 + (444 if side == "right" else 445)  # middle_tip


def test_hand_model_forward_uses_its_sides_tips():
    """HandModel.forward's fingertips are its side's manopth vertices, and the stand-in's
    fingertip vertices sit at the end of their finger on both sides (MANO_LEFT numbering)."""
    pose = np.random.default_rng(3).normal(0, 0.2, (2, 48))
    for side in ("right", "left"):
        h = standin_hand(side)
        v, j = h.forward(pose, np.zeros(10), np.zeros((2, 3)))
        np.testing.assert_array_equal(j[:, [4, 8, 12, 16, 20]], v[:, MANOPTH_TIPS[side]])
        vp = parts.vertex_parts(h.arrays["weights"])
        assert [HAND_PARTS[vp[t]] for t in MANOPTH_TIPS[side]] == ["thumb", "index", "middle", "ring", "pinky"]
