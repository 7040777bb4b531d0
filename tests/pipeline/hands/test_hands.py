"""Stand-in hand and MANO loading through the real smplx code path (fake MANO files with
chumpy-like objects, built from the stand-in hand)."""

import pickle
import sys

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.hands import parts
from pipeline.hands.mano_loading import MANO_URL, load_mano_arrays, read_mano_arrays
from pipeline.hands.model import HandModel, hand_models, mano_hand, standin_hand
from pipeline.hands.standin import STANDIN_NAME, mirror_pose
from schemas import HAND_PARTS
from tests.pipeline.hands.fake_mano import write_fake_mano

RNG = np.random.default_rng(7)
POSE = RNG.normal(0, 0.25, (3, 48))
BETAS = np.array([0.8, -0.5, 0.4, 0.3, 0, 0, 0, 0, 0, 0.0])
TRANS = RNG.normal(0, 0.05, (3, 3))


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    return write_fake_mano(tmp_path_factory.mktemp("mano"))


def test_standin_has_mano_format_and_part_structure():
    h = standin_hand("right")
    a = h.arrays
    assert a["v_template"].shape == (778, 3) and a["f"].shape == (1538, 3) and a["weights"].shape == (778, 16)
    assert h.name == STANDIN_NAME and "not MANO" in h.name
    # each part is one contiguous, non-empty face range, together covering all faces
    starts = sorted(h.part_ranges.values())
    assert [p for p in h.part_ranges] == list(HAND_PARTS)
    assert starts[0][0] == 0 and sum(n for _, n in starts) == 1538 and all(n > 0 for _, n in starts)
    labels = parts.face_parts(a["weights"], h.faces)
    for i, p in enumerate(HAND_PARTS):
        first, n = h.part_ranges[p]
        assert np.all(labels[first:first + n] == i)
    # fingertips (MANO's tip vertex ids of each side) are the extreme vertices of their finger
    for side in ("right", "left"):
        a = standin_hand(side).arrays
        v = a["v_template"]
        vp = parts.vertex_parts(a["weights"])
        for tip, finger in zip(parts.TIP_VERTEX_IDS[side], ("thumb", "index", "middle", "ring", "pinky"), strict=True):
            assert vp[tip] == HAND_PARTS.index(finger)
            mine = v[vp == HAND_PARTS.index(finger)]
            assert np.linalg.norm(v[tip]) >= np.linalg.norm(mine, axis=1).max() - 1e-9


def test_bending_index_moves_only_the_index_finger():
    h = standin_hand("right")
    flat = np.zeros((1, 48))
    bent = flat.copy()
    bent[0, 3:6] = [0, 0, -1.0]  # index MCP (joint 1) flexes
    v0, j0 = h.forward(flat, np.zeros(10), np.zeros(3))
    v1, j1 = h.forward(bent, np.zeros(10), np.zeros(3))
    moved = np.linalg.norm(v1[0] - v0[0], axis=1) > 1e-6
    vp = parts.vertex_parts(h.arrays["weights"])
    assert moved.sum() > 50
    # only vertices skinned to the index joints move (the MCP ring is blended with the palm)
    w = h.arrays["weights"]
    assert np.all(w[moved][:, 1:4].sum(axis=1) > 0)
    assert np.all(moved[vp == HAND_PARTS.index("index")])
    assert np.allclose(j1[0, 5], j0[0, 5])          # MCP stays, tip (21-joint 8) moves
    assert np.linalg.norm(j1[0, 8] - j0[0, 8]) > 0.02


def test_left_is_the_mirror_of_the_right():
    r, lh = standin_hand("right"), standin_hand("left")
    vr, jr = r.forward(POSE, BETAS, TRANS)
    vl, jl = lh.forward(mirror_pose(POSE), BETAS, TRANS * [-1, 1, 1])
    # same vertices up to MANO_LEFT's tip numbering (vertices 444 and 445 swap places)
    swap = np.arange(778)
    swap[[444, 445]] = [445, 444]
    np.testing.assert_allclose(vl[:, swap], vr * [-1, 1, 1], atol=1e-9)
    np.testing.assert_allclose(jl, jr * [-1, 1, 1], atol=1e-9)
    # same PCA coefficients -> mirrored finger poses
    pca = RNG.normal(0, 1, (2, 45))
    np.testing.assert_allclose(lh.pca_to_pose(np.zeros((2, 3)), pca), mirror_pose(r.pca_to_pose(np.zeros((2, 3)), pca)))


def test_pca_round_trip_and_mean_handling():
    h = standin_hand("right")
    pca = RNG.normal(0, 1, (4, 45))
    glob = RNG.normal(0, 0.3, (4, 3))
    pose = h.pca_to_pose(glob, pca)
    np.testing.assert_allclose(pose[:, 3:], pca @ h.hands_components + h.hands_mean)
    np.testing.assert_allclose(h.pose_to_pca(pose), pca, atol=1e-10)
    # our forward (flat_hand_mean=False, pose - mean) equals smplx fed the absolute pose with a flat mean
    import smplx
    import torch
    from smplx.utils import Struct

    m = smplx.MANO(model_path="", data_struct=Struct(**h.arrays), use_pca=False, flat_hand_mean=True,
                   num_pca_comps=45, dtype=torch.float64)
    out = m(betas=torch.tensor(np.tile(BETAS, (4, 1))), global_orient=torch.tensor(glob),
            hand_pose=torch.tensor(pose[:, 3:]), transl=torch.zeros(4, 3, dtype=torch.float64))
    v, _ = h.forward(pose, BETAS, np.zeros(3))
    np.testing.assert_allclose(v, out.vertices.detach().numpy(), atol=1e-9)
    # the smplx pitfall: use_pca=True with 45 components is silently ignored
    m45 = smplx.MANO(model_path="", data_struct=Struct(**h.arrays), use_pca=True, num_pca_comps=45)
    assert m45.use_pca is False


def test_mano_pkl_with_chumpy_objects_loads_without_chumpy(mano_dir):
    assert "chumpy" not in sys.modules
    hand = mano_hand(str(mano_dir), "right")
    assert "chumpy" not in sys.modules
    assert hand.name == "MANO" and hand.source.endswith("MANO_RIGHT.pkl")
    ref = standin_hand("right")
    v, j = hand.forward(POSE, BETAS, TRANS)
    v2, j2 = ref.forward(POSE, BETAS, TRANS)
    np.testing.assert_allclose(v, v2, atol=1e-6)
    np.testing.assert_allclose(j, j2, atol=1e-6)
    assert hand.part_ranges == ref.part_ranges


def test_left_shapedirs_switch(mano_dir):
    as_shipped = mano_hand(str(mano_dir), "left", False)
    fixed = mano_hand(str(mano_dir), "left", True)
    ref = standin_hand("left")  # properly mirrored shape directions
    pose = mirror_pose(POSE)
    np.testing.assert_allclose(fixed.forward(pose, BETAS, TRANS)[0], ref.forward(pose, BETAS, TRANS)[0], atol=1e-6)
    diff = np.abs(as_shipped.forward(pose, BETAS, TRANS)[0] - ref.forward(pose, BETAS, TRANS)[0]).max()
    assert diff > 1e-3  # shipped left shapedirs shape the hand differently
    zero = np.zeros(10)
    np.testing.assert_allclose(as_shipped.forward(pose, zero, TRANS)[0], ref.forward(pose, zero, TRANS)[0], atol=1e-6)


def test_npz_mano_files(tmp_path):
    write_fake_mano(tmp_path, fmt="npz")
    a, path = load_mano_arrays(tmp_path, "right")
    assert path.suffix == ".npz" and a["J_regressor"].shape == (16, 778)
    v, _ = HandModel("right", "MANO", a).forward(POSE, BETAS, TRANS)
    np.testing.assert_allclose(v, standin_hand("right").forward(POSE, BETAS, TRANS)[0], atol=1e-6)


def test_missing_or_wrong_mano_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="MANO_RIGHT.pkl not found.*mano.is.tue.mpg.de") as e:
        hand_models("mano", str(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="needs --mano-dir"):
        hand_models("mano", None)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps({"v_template": np.zeros((10, 3))}))
    with pytest.raises(UserError, match="f.*missing|shape"):
        read_mano_arrays(tmp_path / "MANO_RIGHT.pkl")
    (tmp_path / "MANO_LEFT.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read MANO file"):
        read_mano_arrays(tmp_path / "MANO_LEFT.pkl")
    assert MANO_URL in "https://mano.is.tue.mpg.de"


def test_pickle_globals_outside_the_allow_list_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(UserError, match="not allowed"):
        read_mano_arrays(tmp_path / "MANO_RIGHT.pkl")
    assert not (tmp_path / "pwned").exists()
