"""``generate --motion NPZ --object-mesh MESH``: a MANO motion file becomes a sequence folder.

The .npz holds the hand fields of the open sequence format's ``hands.npz`` plus the object's poses
and the camera (world = the sequence's world frame, metres, right-handed):

    <side>_pose [F,48] axis-angle, <side>_betas [10], <side>_trans [F,3] m, <side>_valid [F] bool
        (side = left / right; a side may be absent)
    flat_hand_mean (bool, default true: poses are absolute), fix_left_shapedirs (bool, default false)
    object_poses [F,4,4] object -> world (with MESH in metres, its own frame)
    K [3,3] pixels (OpenCV), width, height (image size), cam_to_world [4,4] or [F,4,4] (OpenCV axes;
        default identity: the world is the camera frame)

It is written as a sequence folder (``pipeline.sequence_format.write_sequence``; the mesh copied in,
every frame = the background image or mid-grey) and read back with ``read_sequence``, so the
format's own checks apply and ``generate`` runs exactly the same code as for a sequence folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import UserError


def _get(z, key: str, default=None):
    if key in z.files:
        return z[key]
    if default is None:
        raise UserError(f"--motion: the .npz has no {key!r} (see python cli.py generate --help)")
    return default


def sequence_from_motion(npz: Path, mesh: Path, folder: Path, background: Path | None = None) -> Path:
    """Write the sequence folder for a MANO motion file; returns ``folder``."""
    from PIL import Image

    from pipeline.sequence_format import (
        Camera,
        HandSequence,
        Sequence,
        copy_mesh,
        read_sequence,
        write_sequence,
    )
    from pipeline.sequence_format.model import SIDES
    from pipeline.sequence_format.write import write_frames

    if not Path(npz).is_file():
        raise UserError(f"--motion {npz} does not exist")
    if not Path(mesh).is_file():
        raise UserError(f"--object-mesh {mesh} does not exist")
    try:
        z = np.load(npz)
    except (OSError, ValueError) as e:
        raise UserError(f"--motion {npz}: not a readable .npz ({type(e).__name__})") from None
    if not hasattr(z, "files"):  # np.load gave one array: a .npy file, not an .npz of named fields
        raise UserError(f"--motion {npz}: a single array, not an .npz of named fields (see python cli.py generate --help)")
    poses = np.asarray(_get(z, "object_poses"), np.float64)
    n = len(poses)
    hands = {s: HandSequence(pose=np.asarray(z[f"{s}_pose"], np.float64),
                             betas=np.asarray(_get(z, f"{s}_betas"), np.float64),
                             trans=np.asarray(_get(z, f"{s}_trans"), np.float64),
                             valid=np.asarray(_get(z, f"{s}_valid", np.ones(n, bool)), bool))
             for s in SIDES if f"{s}_pose" in z.files}
    if not hands:
        raise UserError(f"--motion {npz}: no hand (left_pose / right_pose)")
    w, h = int(_get(z, "width")), int(_get(z, "height"))
    c2w = np.asarray(_get(z, "cam_to_world", np.eye(4)), np.float64)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = folder / "frames" / "cam0"
    cam = Camera(name="cam0", K=np.asarray(_get(z, "K"), np.float64), width=w, height=h,
                 cam_to_world=c2w if c2w.ndim == 3 else np.repeat(c2w[None], n, axis=0), frames=frames)
    copied = copy_mesh(Path(mesh), folder)
    seq = Sequence(folder=folder, name=Path(npz).stem, n_frames=n, fps=None, cameras={"cam0": cam}, hands=hands,
                   flat_hand_mean=bool(_get(z, "flat_hand_mean", np.array(True))),
                   fix_left_shapedirs=bool(_get(z, "fix_left_shapedirs", np.array(False))),
                   object_mesh=copied, object_name=Path(mesh).stem, object_poses=poses,
                   object_valid=np.ones(n, bool), source={"from": str(Path(npz).resolve())})
    write_sequence(folder, seq)
    if background is not None:
        with Image.open(background) as im:
            bg = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR))
    else:
        bg = np.full((h, w, 3), 128, np.uint8)
    write_frames(folder, "cam0", 0, np.repeat(bg[None], n, axis=0))
    read_sequence(folder)  # the format's checks, with the file and field named on failure
    return folder
