"""MLO layers of a bimanual frame (real EGL, stand-in hands through smplx): occlusion-free
layers, occlusion confidence, absent hands, union = full-scene render."""

import numpy as np
import pytest
import trimesh

from pipeline.hands.model import standin_hand
from pipeline.render.cameras import intrinsics, project
from pipeline.render.context import shared_context
from pipeline.render.layers import Draw, LayerRenderer
from pipeline.render.mlo import HandTrack, ObjectTrack, render_mlo, vertex_normals
from schemas import LAYER_NAMES
from schemas.occlusion import occlusion_confidence

R = 128
K = intrinsics(R, 40.0)
IDX = LAYER_NAMES.index("right_index")


@pytest.fixture(scope="module")
def renderer():
    return LayerRenderer(shared_context(R), R, near=0.05, far=50.0)


def _hand(side, trans, n=1):
    """Flat-ish hand, palm towards the camera, fingers up, in the OpenGL camera frame."""
    h = standin_hand(side)
    pose = np.zeros((n, 48))
    pose[:, 3:] = h.hands_mean
    pose[:, :3] = [0, 0, np.pi / 2 if side == "right" else -np.pi / 2]  # fingers +x -> +y (up)
    v, _ = h.forward(pose, np.zeros(10), np.tile(trans, (n, 1)))
    return h, v


def _scene(left_valid=True):
    """Right index finger hidden behind a box; left hand beside it, in front."""
    h_r, v_r = _hand("right", [0.02, -0.10, -0.55])
    h_l, v_l = _hand("left", [-0.03, -0.10, -0.45])
    lo, hi = h_r.part_ranges["index"][0], sum(h_r.part_ranges["index"])
    finger = v_r[0][np.unique(h_r.faces[lo:hi])]
    centre = finger.mean(axis=0)
    box = trimesh.creation.box((0.06, 0.12, 0.02))
    mv = np.eye(4)
    mv[:3, 3] = [centre[0], centre[1], centre[2] + 0.05]  # 5 cm in front of the finger
    obj = ObjectTrack(box.vertices, box.vertex_normals, box.faces, mv[None], np.array([True]))
    hands = {"right": HandTrack(h_r, v_r, np.array([True])), "left": HandTrack(h_l, v_l, np.array([left_valid]))}
    return obj, hands


def test_finger_behind_object_is_complete_in_its_layer_and_occluded_in_D(renderer):
    obj, hands = _scene()
    normal, depth = render_mlo(renderer, K, 1, obj, hands)
    finger, box = depth[0, IDX] > 0, depth[0, 0] > 0
    assert finger.sum() > 30
    # the finger is entirely behind the box in the image: nearest-surface render would hide it
    assert (finger & box).sum() == finger.sum()
    # complete in its own layer: identical to the finger rendered with nothing else in the scene
    n_alone, d_alone = render_mlo(renderer, K, 1, None, {"right": hands["right"]})
    # (same pixels; values equal up to float rounding, the tile sits elsewhere in the atlas)
    np.testing.assert_array_equal(depth[0, IDX] > 0, d_alone[0, IDX] > 0)
    np.testing.assert_allclose(depth[0, IDX], d_alone[0, IDX], rtol=1e-5)
    assert np.abs(normal[0, IDX].astype(int) - n_alone[0, IDX]).max() <= 1
    # the object layer holds the object's depth at those pixels, never the finger's
    assert np.all(depth[0, 0][finger] < depth[0, IDX][finger] - 0.03)
    n_obj, d_obj = render_mlo(renderer, K, 1, obj, {})
    np.testing.assert_array_equal(depth[0, 0] > 0, d_obj[0, 0] > 0)
    np.testing.assert_allclose(depth[0, 0], d_obj[0, 0], rtol=1e-5)
    # D: the finger is occluded there (about 5 cm behind the box -> exp(-2.5) with tau 2 cm)
    D = occlusion_confidence(depth[0], tau=0.02)
    assert D[IDX][finger].max() < 0.15
    assert np.all(D[0][finger] == 1.0)
    assert np.all(D[IDX][~finger] == 0)


def test_absent_hands_have_empty_layers(renderer):
    obj, hands = _scene(left_valid=False)
    normal, depth = render_mlo(renderer, K, 1, obj, hands)
    left = [LAYER_NAMES.index(n) for n in LAYER_NAMES if n.startswith("left_")]
    assert not depth[0, left].any() and not normal[0, left].any()
    assert (depth[0, IDX] > 0).any()
    _, depth2 = render_mlo(renderer, K, 1, obj, {"right": hands["right"]})  # no left hand at all
    np.testing.assert_array_equal(depth > 0, depth2 > 0)
    _, full = render_mlo(renderer, K, 1, obj, _scene(left_valid=True)[1])
    assert all((full[0, k] > 0).any() for k in left)


def test_union_of_layers_matches_full_scene_render(renderer):
    obj, hands = _scene()
    normal, depth = render_mlo(renderer, K, 1, obj, hands)
    # one plain render of the whole scene: every mesh in one tile, z-buffered
    for side, tr in hands.items():
        renderer.upload(f"full_{side}", tr.vertices[0], vertex_normals(tr.vertices[0], tr.model.faces), tr.model.faces)
    renderer.upload("full_obj", obj.vertices, obj.normals, obj.faces)
    fn, fd = renderer.render([[Draw("full_obj", obj.modelviews[0]), Draw("full_left", np.eye(4)),
                               Draw("full_right", np.eye(4))]], K)
    union = (depth[0] > 0).any(axis=0)
    np.testing.assert_array_equal(union, fd[0] > 0)
    front = np.where(depth[0] > 0, depth[0], np.inf).min(axis=0)
    np.testing.assert_allclose(front[union], fd[0][union], atol=1e-4)  # 0.1 mm: z-fights at part seams
    # the front layer's normal is the full render's normal
    k_front = np.where(depth[0] > 0, depth[0], np.inf).argmin(axis=0)
    picked = np.take_along_axis(normal[0], k_front[None, ..., None], axis=0)[0]
    assert np.mean(np.abs(picked[union].astype(int) - fn[0][union].astype(int)) <= 1) > 0.999
    # layers are where the hand projects: the right palm layer contains the projected wrist joint
    h = hands["right"].model
    j = project(np.asarray([hands["right"].vertices[0][np.argmax(h.arrays["weights"][:, 0])]]), K)[0]
    assert union[int(j[1]), int(j[0])]


def test_many_frames_one_atlas_per_64_tiles(renderer):
    h, v = _hand("right", [0.0, -0.1, -0.5], n=6)
    v = v + np.linspace(0, 0.05, 6)[:, None, None] * [1, 0, 0]
    normal, depth = render_mlo(renderer, K, 6, None, {"right": HandTrack(h, v, np.ones(6, bool))})
    cols = [np.nonzero((depth[t, LAYER_NAMES.index("right_palm")] > 0).any(axis=0))[0].mean() for t in range(6)]
    assert np.all(np.diff(cols) > 0)  # frame t's hand moved right: tiles come back in frame order
    assert not depth[:, 0].any()  # no object layer
