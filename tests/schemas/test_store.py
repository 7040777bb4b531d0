import numpy as np
import pytest

from schemas import LAYER_NAMES, SchemaError, StoreLayout, occlusion_confidence, validate_sample


def _layout(**kw):
    args = dict(kind="objaverse", frames=3, resolution=16, layers=("object",), samples_per_shard=2)
    args.update(kw)
    return StoreLayout(**args)


def _sample(layout):
    rng = np.random.default_rng(0)
    s = {}
    for spec in layout.arrays:
        s[spec.name] = np.zeros(layout.sample_shape(spec.name), spec.dtype)
    s["obj_rot"][..., 3] = 1
    s["obj_scale"][:] = 1
    n = rng.normal(size=s["point_normals"].shape)
    s["point_normals"] = (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)
    return s


def test_layer_order_is_fixed_and_has_13_layers():
    assert len(LAYER_NAMES) == 13
    assert LAYER_NAMES[0] == "object"
    assert LAYER_NAMES[1:7] == ("left_palm", "left_thumb", "left_index", "left_middle", "left_ring", "left_pinky")
    assert LAYER_NAMES[7] == "right_palm"


def test_layout_rejects_unknown_and_misordered_layers():
    with pytest.raises(SchemaError):
        _layout(layers=("object", "left_elbow"))
    with pytest.raises(SchemaError):
        _layout(layers=("right_palm", "object"))
    with pytest.raises(SchemaError):
        _layout(kind="nope")


def test_attrs_round_trip_and_version_check():
    lay = _layout()
    assert StoreLayout.from_attrs(lay.to_attrs()) == lay
    attrs = lay.to_attrs() | {"schema_version": 999}
    with pytest.raises(SchemaError, match="schema version"):
        StoreLayout.from_attrs(attrs)


def test_v3_objaverse_stores_are_read_v3_camera_stores_refused_with_how_to_remake():
    """Schema v4 adds ``valid`` (hoi, human) and ``hand_inside`` (hoi). An Objaverse store of v3 has
    the same contract and is read; a v3 hoi / human store may hold unmarked black padding (and
    ARCTIC's wrong lid), so it is refused with one line naming the command that remakes it."""
    obj = _layout()
    assert StoreLayout.from_attrs(obj.to_attrs() | {"schema_version": 3}) == obj
    for kind, layers, cmd in (("hoi", LAYER_NAMES, "render-hoi"), ("human", (), "render-human")):
        attrs = _layout(kind=kind, layers=layers).to_attrs() | {"schema_version": 3}
        with pytest.raises(SchemaError, match=f"version 3 .*no validity mask.*remake it with this version's {cmd}") as e:
            StoreLayout.from_attrs(attrs)
        assert "\n" not in str(e.value)
    names = {k: {a.name for a in _layout(kind=k, layers=LAYER_NAMES if k == "hoi" else ()).arrays}
             for k in ("objaverse", "hoi", "human")}
    assert "valid" in names["hoi"] and "valid" in names["human"] and "valid" not in names["objaverse"]
    assert "hand_inside" in names["hoi"] and "hand_inside" not in names["human"]
    assert _layout(kind="human", layers=()).sample_shape("valid") == (3, 16, 16)


def test_hoi_layout_has_hand_arrays_objaverse_does_not():
    hoi = _layout(kind="hoi", layers=LAYER_NAMES)
    names = {a.name for a in hoi.arrays}
    assert {"mano_pose", "joints_2d", "hand_valid"} <= names
    assert "mano_pose" not in {a.name for a in _layout().arrays}
    assert hoi.sample_shape("mlo_normal") == (3, 13, 16, 16, 3)


def test_validate_sample_accepts_good_and_names_the_bad_array():
    lay = _layout()
    good = _sample(lay)
    validate_sample(lay, good)
    bad = dict(good, rgb=np.zeros((3, 16, 15, 3), np.uint8))
    with pytest.raises(SchemaError, match="rgb: shape"):
        validate_sample(lay, bad)
    bad = dict(good, mlo_depth=good["mlo_depth"].astype(np.float32))
    with pytest.raises(SchemaError, match="mlo_depth: dtype"):
        validate_sample(lay, bad)
    q = good["obj_rot"].copy()
    q[0] = [0, 0, 0, 2]
    with pytest.raises(SchemaError, match="unit"):
        validate_sample(lay, dict(good, obj_rot=q))
    d = good["mlo_depth"].copy()
    d[0, 0, 0, 0] = np.nan
    with pytest.raises(SchemaError, match="NaN"):
        validate_sample(lay, dict(good, mlo_depth=d))
    with pytest.raises(SchemaError, match="obj_scale"):
        validate_sample(lay, dict(good, obj_scale=np.zeros(1, np.float32)))
    missing = dict(good)
    del missing["K"]
    with pytest.raises(SchemaError, match="missing array 'K'"):
        validate_sample(lay, missing)


def test_occlusion_confidence_pinned_values():
    # two layers over 1x3 pixels: layer 0 at 1.0 m everywhere but absent at px 2,
    # layer 1 at 1.04 m (behind by 2 tau) at px 0, in front (0.9) at px 1, alone at px 2.
    depth = np.array([[[1.0, 1.0, 0.0]], [[1.04, 0.9, 2.0]]], np.float32)  # [L=2, H=1, W=3]
    D = occlusion_confidence(depth, tau=0.02)
    np.testing.assert_allclose(D[0, 0], [1.0, np.exp(-0.1 / 0.02), 0.0], rtol=1e-5)
    np.testing.assert_allclose(D[1, 0], [np.exp(-2.0), 1.0, 1.0], rtol=1e-4)


def test_occlusion_confidence_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 1.5, size=(2, 13, 8, 8)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.4] = 0
    a = occlusion_confidence(depth, 0.05)
    b = occlusion_confidence(torch.from_numpy(depth), 0.05).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert a.max() <= 1 and a.min() >= 0
    # every pixel covered by some layer has exactly one front layer at confidence 1
    covered = (depth > 0).any(axis=1)
    assert np.all((a == 1).any(axis=1) == covered)
