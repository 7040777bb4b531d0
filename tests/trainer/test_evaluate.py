"""`evaluate` on a tiny model over the demo stores: every metric, resume, the table, one-line errors.
Networks are RANDOMLY INITIALISED (Inception, LPIPS, a small scripted stand-in for the I3D file):
the values are not FID / LPIPS / FVD of real weights; the code path is the real one."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError


class TinyI3D(nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt: [B, 3, T, H, W] in [0, 255] -> [B, D]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True):
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        return self.conv(x).relu().mean(dim=(2, 3, 4))


def test_evaluate_writes_every_metric_resumes_and_compares(stage1_run, objaverse_store, hoi_store, tmp_path):
    from trainer.evaluate import evaluate

    _, run = stage1_run
    i3d = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(i3d))
    out = tmp_path / "eval"
    said = []
    kw = dict(split="test", steps=2, batch=2, i3d=str(i3d), random_init_networks=True, compare="paper",
              log=said.append)
    rep = evaluate(run["checkpoint"], [str(objaverse_store), str(hoi_store)], str(out), **kw)
    m = rep["metrics"]
    for name in ("psnr", "ssim", "lpips", "fid", "fvd"):
        for part in ("region", "full"):
            assert isinstance(m[f"{name}_{part}"], float), (name, part)
    assert rep["clips"] == 2 and not rep["comparable_to_paper"]
    assert "fid" not in rep["not_computed"] and "fvd" not in rep["not_computed"]
    from trainer.metrics.hands import detector_status

    if detector_status() is None:   # the [human] extra works here: the HOI store's joints_2d are scored
        assert "hand_detection_gen_vs_joints" in m
    else:                            # reported as not computed, with the one-line reason
        assert detector_status() == rep["not_computed"]["hands"]
    lines = (out / "clips.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {json.loads(x)["key"] for x in lines}
    table = (out / "metrics.md").read_text()
    assert "| FID ↓ |" in table and "RANDOMLY INITIALISED" in table
    assert "| Table 1, DexYCB: ManiVideo | 49.96 | 0.0790 | 30.10 | 0.9130 | 57.30 |" in table
    # resume: nothing is generated again, the results are the same
    said.clear()
    again = evaluate(run["checkpoint"], [str(objaverse_store), str(hoi_store)], str(out), **kw)
    assert any("2 already done" in s for s in said) and len((out / "clips.jsonl").read_text().splitlines()) == 2
    assert again["metrics"]["psnr_full"] == m["psnr_full"]
    with pytest.raises(UserError, match="another evaluation"):
        evaluate(run["checkpoint"], [str(objaverse_store)], str(out), **kw)
    with pytest.raises(UserError, match="does not exist"):
        evaluate(run["checkpoint"], [str(objaverse_store)], str(tmp_path / "e2"), inception=str(tmp_path / "nope.pth"),
                 steps=2, log=said.append)


def test_resume_survives_a_torn_clips_jsonl_line(tmp_path):
    """A run killed while appending to clips.jsonl leaves a torn last line: the next run must
    not crash on it; the torn clip is generated again and the next record starts its own line."""
    from trainer.evaluate import Evaluation

    ev = Evaluation.__new__(Evaluation)
    ev.out, ev.run = tmp_path / "eval", {"split": "test"}
    (ev.out / "clips").mkdir(parents=True)
    (ev.out / "run.json").write_text(json.dumps(ev.run))
    for cid in ("a", "b"):
        (ev.out / "clips" / f"{cid}.npz").write_bytes(b"x")
    (ev.out / "clips.jsonl").write_text(json.dumps({"id": "a", "psnr_full": 1.0}) + "\n" + '{"id": "b", "psn')
    done = ev._check_out()
    assert set(done) == {"a"}
    with open(ev.out / "clips.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "b"}) + "\n")
    assert set(ev._check_out()) == {"a", "b"}
