"""render-human end to end on make-demo-human's dataset (real Ray runner, real Zarr store)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.human.config import HumanConfig
from pipeline.human.extract import mediapipe_status
from schemas.reader import StoreReader
from schemas.store import BODY_25_NAMES, validate_sample

T, R = 4, 64


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo (3 videos of 9 frames: 2 clips each) plus a broken mp4 and a video nobody is in."""
    from pipeline.human.demo import make_demo

    root = tmp_path_factory.mktemp("human") / "demo"
    make_demo(root, 9, 0)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    (root / "broken_openpose").mkdir()
    shutil.copytree(root / "dancer_b", root / "nobody")
    for f in (root / "nobody" / "openpose").iterdir():
        f.write_text(json.dumps({"version": 1.3, "people": []}))
    return root


@pytest.fixture(scope="module")
def run(ray_cluster, demo, tmp_path_factory):
    from pipeline.engine import runner
    from pipeline.human.job import build_job

    out = tmp_path_factory.mktemp("human_store") / "human.zarr"
    cfg = HumanConfig(frames=T, stride=2, resolution=R, samples_per_shard=2).validate()
    summary = runner.run(build_job(demo, out, cfg, 2), 2, progress=False)
    return out, cfg, summary


def test_store_holds_valid_human_samples_and_records_bad_videos(run):
    out, cfg, summary = run
    reader = StoreReader(out)
    assert reader.layout.kind == "human" and reader.layout.layers == ()
    # 9 frames at stride 2 -> 5 ids -> one 4-frame clip per good video
    assert sorted(reader.key(i) for i in range(len(reader))) == ["dancer_a", "dancer_b", "walker"]
    failures = {f["key"]: f for f in reader.failures()}
    assert failures["broken"]["stage"] == "decode"
    assert failures["nobody"]["stage"] == "keypoints" and "no person" in failures["nobody"]["reason"]
    assert summary.items_ok == 3 and summary.items_failed == 2
    for i in range(len(reader)):
        s = reader.read(i)
        validate_sample(reader.layout, s)
        a = reader.attrs(i)
        assert a["source_frames"] == [0, 2, 4, 6] and a["keypoint_source"] == "openpose-json"
        assert a["reference_frame"] == 8 and not a["reference_in_clip"]  # farthest frame, away from the clip
        assert a["has_person_mask"] == (reader.key(i) == "dancer_a") == bool(s["person_mask"].any())
        assert (np.abs(s["K"]).sum() > 0) == (reader.key(i) == "walker") == a["camera_known"]
        assert s["skeleton"].any(axis=-1).mean(axis=(1, 2)).min() > 0.01  # every frame has a skeleton
        assert not np.array_equal(s["background"], s["rgb"][0])
        # the crop holds the camera's pixels: valid (schema v4) and its padding figure agree
        assert s["valid"].shape == (T, R, R) and a["padding_max"] == round(1 - s["valid"].mean(axis=(1, 2)).min(), 4)


def test_skeleton_keypoints_and_frames_agree(run):
    out, _, _ = run
    reader = StoreReader(out)
    i = next(i for i in range(len(reader)) if reader.key(i) == "dancer_a")
    s = reader.read(i)
    kp = s["keypoints"]
    neck, hip = BODY_25_NAMES.index("Neck"), BODY_25_NAMES.index("MidHip")
    for t in range(T):
        mid = np.round((kp[t, neck, :2] + kp[t, hip, :2]) / 2 - 0.5).astype(int)  # middle of the spine
        x, y = mid
        near = s["skeleton"][t, y - 1:y + 2, x - 1:x + 2].reshape(-1, 3)
        assert (near == (255, 0, 0)).all(axis=1).any()                        # drawn in the spine's colour
        assert s["person_mask"][t, y, x]                                      # inside the person
        box = kp[t, :25][kp[t, :25, 2] > 0]
        assert (box[:, :2] > 0).all() and (box[:, :2] < R).all()              # the crop holds the person
    # the figure walks right: the crop follows it, so it stays near the middle of every clip
    assert abs(kp[:, hip, 0].mean() - R / 2) < R / 4


def test_a_person_wider_than_the_frame_is_padded_marked_and_refused_past_max_padding():
    """A crop that cannot fit the frame (the person spans more than its height) is padded; ``valid``
    marks the padding; over ``max_padding`` the clip raises ``TooMuchPadding`` (the job skips it)."""
    from pipeline.clips.crop import TooMuchPadding
    from pipeline.human.clip import build_sample

    H, W = 100, 300
    frames = {i: np.full((H, W, 3), 120, np.uint8) for i in range(5)}
    kp = np.zeros((67, 3))
    kp[:25, 0], kp[:25, 1], kp[:25, 2] = np.linspace(30, 250, 25), 50.0, 0.9   # 1.3 x 220 px: wider than H

    def keypoints(i):
        return kp

    cfg = HumanConfig(frames=4, resolution=64, max_padding=0.8).validate()
    s = build_sample([0, 1, 2, 3], frames, keypoints, None, 4, None, cfg, "test")
    side = s["attrs"]["crop_box"][2]
    assert H < side <= W and s["attrs"]["padding_max"] == pytest.approx(1 - H / side, abs=0.02)
    rows = s["valid"][0].all(axis=1)
    assert rows.sum() == pytest.approx(64 * H / side, abs=1.5) and not rows[0] and not rows[-1]
    assert s["rgb"][0][s["valid"][0]].min() > 100 and s["rgb"][0][~s["valid"][0]].max() < 120
    with pytest.raises(TooMuchPadding):
        build_sample([0, 1, 2, 3], frames, keypoints, None, 4, None, HumanConfig(frames=4, resolution=64), "test")


def test_resume_skips_done_shards(ray_cluster, run, demo):
    from pipeline.engine import runner
    from pipeline.human.job import build_job

    out, cfg, _ = run
    again = runner.run(build_job(demo, out, cfg, 2), 2, progress=False)
    assert again.items_skipped == 5 and again.shards_run == 0


def test_inspect_preview_export_show_the_store(run, tmp_path):
    from pipeline.human.preview_human import preview_human
    from pipeline.inspection.export import export_npz
    from pipeline.inspection.inspect_store import format_report, inspect
    from pipeline.inspection.preview import write_preview

    out, _, _ = run
    report = inspect(out)
    assert report["kind"] == "human" and report["samples"] == 3 and "skeleton" in report["arrays"]
    assert "mlo_normal" not in report["arrays"] and "none (human store" in format_report(report)
    png, gif = write_preview(out, tmp_path / "p.png", 3, tmp_path / "p.gif",
                             by_kind={"human": preview_human})
    from PIL import Image

    assert Image.open(png).size[0] >= 10 * 128 and Image.open(gif).n_frames == T
    export_npz(out, 0, tmp_path / "s.npz")
    d = np.load(tmp_path / "s.npz")
    assert d["skeleton"].shape == (T, R, R, 3) and d["keypoints"].shape == (T, 67, 3)
    assert d["valid"].shape == (T, R, R) and d["valid"].dtype == bool            # export-sample includes valid
    assert report["padding"]["samples"] == 3 and "padding " in format_report(report)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    from pipeline.human.job import build_job

    cfg = HumanConfig(frames=T, resolution=R).validate()
    with pytest.raises(UserError, match="no videos"):
        build_job(tmp_path, tmp_path / "o.zarr", cfg)
    (tmp_path / "v" / "images").mkdir(parents=True)
    from PIL import Image

    for i in range(T):
        Image.new("RGB", (32, 32)).save(tmp_path / "v" / "images" / f"{i}.png")
    if mediapipe_status() is None:
        pytest.skip("MediaPipe is usable here: a video without keypoint files is extracted, not refused")
    with pytest.raises(UserError, match=r"\[human\]") as e:
        build_job(tmp_path, tmp_path / "o.zarr", cfg)
    assert "\n" not in str(e.value) and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("args, says", [
    (["render-human", "--root", "{tmp}/missing"], "is not a folder"),
    (["render-human", "--root", "{tmp}", "--frames", "0"], "--frames must be >= 1"),
    (["render-human", "--root", "{tmp}"], "no videos under"),
    (["make-demo-human", "{tmp}"], "not empty"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, says):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "something").write_text("x")
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "cli.py", *[a.format(tmp=tmp_path) for a in args],
                           "--out" if args[0] == "render-human" else "--frames",
                           str(tmp_path / "o.zarr") if args[0] == "render-human" else "4"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_a_missing_mask_is_an_error_not_a_shift(tmp_path):
    """Masks pair with frames by order: one mask short would shift every later mask onto the
    wrong frame, so a count mismatch is the item's failure ("load")."""
    from PIL import Image

    from pipeline.errors import StepFailed
    from pipeline.human.video import find_videos, read_masks

    d = tmp_path / "v1"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8)).save(d / "images" / f"{i:04d}.png")
        if i != 1:
            Image.new("L", (8, 8), 255 * (i % 2)).save(d / "masks" / f"{i:04d}.png")
    src = find_videos(tmp_path)[0]
    with pytest.raises(StepFailed, match="3 masks for 4 frames"):
        read_masks(src, [0, 1])


def test_frames_without_zero_padding_are_read_in_natural_order(tmp_path):
    from pipeline.human.video import _images

    for n in (10, 2, 1):
        (tmp_path / f"f_{n}.png").write_bytes(b"")
    assert [p.name for p in _images(tmp_path)] == ["f_1.png", "f_2.png", "f_10.png"]
