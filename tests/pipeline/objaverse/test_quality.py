"""Framing and the data-quality gate: stray parts, thin objects, reference framing, stored figures."""

import json

import numpy as np
import pytest
import trimesh

from pipeline.assets.mesh_io import canonicalise
from pipeline.engine import runner
from pipeline.errors import StepFailed
from pipeline.inspection.inspect_store import format_report, inspect
from pipeline.objaverse.sample import check_framing, render_object
from pipeline.objects.object_refs import REF_FILL, reference_views_with_coverage
from pipeline.render.workers import worker_renderers
from schemas.config import RenderConfig
from schemas.reader import StoreReader
from tests.pipeline.helpers import small_job

R = 64
DEFAULT_MIN = RenderConfig().min_coverage


def _coverage(mesh, normalise="bulk"):
    obj = canonicalise("m", trimesh.Scene(mesh), 10**6, normalise)
    return obj, reference_views_with_coverage(obj, worker_renderers(R, 40.0).rgb, R)[1]


def body_with_specks():
    """A unit box plus two 5 cm specks 5 box-sizes away (stray parts)."""
    specks = [trimesh.creation.box(extents=(0.05,) * 3).apply_translation(t) for t in ([5, 0, 0], [0, -5, 0])]
    return trimesh.util.concatenate([trimesh.creation.box(extents=(1, 1, 1))] + specks)


def two_small_parts_apart():
    """Two equal 0.2 boxes 12 apart: no bulk to frame, the object is degenerate either way."""
    return trimesh.util.concatenate([trimesh.creation.box(extents=(0.2,) * 3).apply_translation(t)
                                     for t in ([0, 0, 0], [12, 0, 0])])


def test_stray_specks_no_longer_shrink_the_body():
    obj, bulk = _coverage(body_with_specks(), "bulk")
    _, bbox = _coverage(body_with_specks(), "bbox")
    assert bulk.max() > 0.3 and 0 < obj.outside < 0.01  # the body fills the views; specks lie outside
    assert bulk.max() > 10 * bbox.max()  # farthest-vertex normalisation: the body is small
    # the specks (2.5 canonical units out: they could pass by the camera) are not rendered
    assert np.linalg.norm(obj.mesh.vertices, axis=1).max() < 1.0 and len(obj.mesh.faces) == 12
    assert sum(len(g.faces) for g in obj.scene.geometry.values()) == 12
    check_framing(bulk, DEFAULT_MIN)


def test_scattered_parts_fail_as_degenerate_framing():
    _, cov = _coverage(two_small_parts_apart(), "bulk")
    with pytest.raises(StepFailed) as e:
        check_framing(cov, DEFAULT_MIN)
    assert (e.value.stage, e.value.reason) == ("quality", "degenerate framing") and "%" in e.value.detail


def test_thin_real_objects_pass_the_gate():
    pole = trimesh.creation.cylinder(radius=0.003, height=1.0)  # a needle-thin pole, 170:1
    pen = trimesh.creation.cylinder(radius=0.004, height=0.14)  # a pen
    sheet = trimesh.creation.box(extents=(1, 1, 0.001))  # edge-on in four of six views
    for mesh in (pole, pen, sheet):
        _, cov = _coverage(mesh)
        check_framing(cov, DEFAULT_MIN)
        assert cov.max() > 1.5 * DEFAULT_MIN
    _, cov = _coverage(sheet)
    assert (cov < DEFAULT_MIN).sum() >= 4  # edge-on views are empty, yet the sheet passes


def test_reference_views_fill_the_frame_the_same_for_all_six():
    obj = canonicalise("cube", trimesh.Scene(trimesh.creation.box(extents=(1, 1, 1))), 100)
    views, cov = reference_views_with_coverage(obj, worker_renderers(R, 40.0).rgb, R)
    widths = []
    for v in views:
        cols = np.where((v < 250).any(axis=(0, 2)))[0]
        widths.append(cols.max() - cols.min() + 1)
    # a cube: every view is the same square; its nearest face edge spans about REF_FILL of the image
    assert max(widths) - min(widths) <= 1
    assert REF_FILL * R * 0.75 <= widths[0] <= R
    np.testing.assert_allclose(cov, cov[0], atol=0.02)


def test_degenerate_object_fails_and_good_samples_carry_quality_figures(ray_cluster, tmp_path, builtin_dir):
    src = tmp_path / "meshes"
    src.mkdir()
    (src / "globe.glb").write_bytes((builtin_dir / "builtin-globe.glb").read_bytes())
    two_small_parts_apart().export(src / "apart.glb")
    body_with_specks().export(src / "specks.glb")
    job, cfg = small_job(tmp_path / "s.zarr", source=str(src))
    summary = runner.run(job, workers=2, progress=False)
    assert (summary.items_ok, summary.items_failed) == (2, 1)
    (fail,) = summary.failures
    assert (fail["key"], fail["stage"], fail["reason"]) == ("apart.glb", "quality", "degenerate framing")
    assert "coverage" in fail["detail"]
    assert json.loads((tmp_path / "s.zarr" / "failures.jsonl").read_text())["detail"] == fail["detail"]
    reader = StoreReader(tmp_path / "s.zarr")
    for i in range(len(reader)):
        a = reader.attrs(i)
        assert len(a["coverage_frames"]) == cfg.frames and len(a["coverage_refs"]) == 6
        assert max(a["coverage_refs"]) > 0.2 and min(a["coverage_frames"]) > 0 and a["faces"] > 0
    attrs = {reader.key(i): reader.attrs(i) for i in range(len(reader))}
    assert attrs["globe.glb"]["textured"] is True and attrs["specks.glb"]["textured"] is False
    assert attrs["specks.glb"]["outside_area"] > 0
    report = inspect(tmp_path / "s.zarr")
    assert report["quality"]["textured"] == 1 and report["quality"]["faces"]["min"] == 12  # the box; its specks were dropped
    text = format_report(report)
    assert "coverage_refs" in text and "quality: degenerate framing" in text and "e.g." in text


def test_render_object_applies_the_gate_before_drawing_clips():
    cfg = RenderConfig(frames=2, resolution=R, samples_per_shard=1).validate()
    obj = canonicalise("apart", trimesh.Scene(two_small_parts_apart()), 10**5)
    with pytest.raises(StepFailed, match="degenerate framing"):
        render_object(obj, cfg, worker_renderers(R, cfg.yfov_deg))
