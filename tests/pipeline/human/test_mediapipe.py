"""The MediaPipe keypoint path (optional extra ``[human]``): only where it is installed and usable."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from pipeline.human.extract import mediapipe_status  # noqa: E402

if mediapipe_status() is not None:
    pytest.skip(mediapipe_status(), allow_module_level=True)

from schemas.store import BODY_25_NAMES  # noqa: E402

B = {n: i for i, n in enumerate(BODY_25_NAMES)}


def test_extractor_finds_the_demo_figure_with_models_from_the_wheel():
    from pipeline.human.crop import has_person
    from pipeline.human.demo import SIZE, draw_figure, figure_keypoints, room
    from pipeline.human.extract import MediaPipeExtractor

    W, H = SIZE
    truth = figure_keypoints(0.3, W, H)
    frame, _ = draw_figure(truth, room(W, H, np.random.default_rng(0)))
    ex = MediaPipeExtractor()
    try:
        kp = ex(frame)
        assert not has_person(ex(np.zeros_like(frame)))  # a black frame: nobody
    finally:
        ex.close()
    assert kp.shape == (67, 3) and has_person(kp)
    for name in ("Nose", "Neck", "MidHip"):  # the cartoon's torso is where MediaPipe puts it
        assert np.linalg.norm(kp[B[name], :2] - truth[B[name], :2]) < 12, name


def test_worker_step_extracts_when_a_video_has_no_keypoint_files(tmp_path):
    from pipeline.engine.items import WorkItem
    from pipeline.human.config import HumanConfig
    from pipeline.human.demo import make_demo
    from pipeline.human.job import list_items, render_human_item

    make_demo(tmp_path / "d", 5, 0)
    shutil.rmtree(tmp_path / "d" / "dancer_a" / "openpose")
    cfg = HumanConfig(frames=4, resolution=64).validate()
    items, _ = list_items(tmp_path / "d", cfg)
    item = next(i for i in items if i.key == "dancer_a")
    [s] = render_human_item(WorkItem(item.key, item.locator, item.n_samples), {"human": cfg.to_dict()})
    assert s["attrs"]["keypoint_source"] == "mediapipe"
    assert s["keypoints"][:, :25, 2].max() > 0.5 and s["skeleton"].any()
