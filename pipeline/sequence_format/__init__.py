"""The project's open per-sequence format for hand-object motion capture (``render-hoi sequence``,
``export-sequence``; ``generate`` reads motions in it).

One folder per sequence (all arrays in one right-handed *world* frame, metres):

  sequence.json       format name + ``format_version``, ``n_frames``, optional ``fps``, ``object``, ``source``
  cameras.json        ``axes`` ("opencv"/"opengl") and per camera: ``K``, ``width``, ``height``,
                      ``cam_to_world`` [4,4] (static) or [n_frames,4,4], optional ``distortion`` (must be zero)
  frames/<camera>/    one image per frame (.png/.jpg/.jpeg, natural name order), or frames/<camera>.mp4 (...)
  hands.npz           ``flat_hand_mean``, ``fix_left_shapedirs`` (bool scalars) and per side present
                      ``<side>_pose`` [F,48], ``<side>_betas`` [10], ``<side>_trans`` [F,3] m, ``<side>_valid`` [F]
  object mesh         (``object.mesh`` in sequence.json, e.g. object.glb) + object_poses.npy [F,4,4]
                      object -> world, optional object_valid.npy [F] bool, optional object_parts.npz
  joints_3d.npy       optional [F,2,21,3] labels (left, right), world, metres, NaN = none
  background/<camera>.png  optional scene reference per camera

``read_sequence(folder)`` validates and returns a ``Sequence`` (a UserError naming the file and
the field otherwise); ``write_sequence`` writes one. Field-by-field documentation:
``docs/sequence-format.md``.
"""

from pipeline.sequence_format.model import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Camera,
    HandSequence,
    PartSequence,
    Sequence,
    absolute_pose,
)
from pipeline.sequence_format.read import count_frames, read_frames, read_sequence
from pipeline.sequence_format.write import copy_mesh, write_frames, write_sequence

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Camera", "HandSequence", "PartSequence", "Sequence", "absolute_pose",
           "copy_mesh", "count_frames", "read_frames", "read_sequence", "write_frames", "write_sequence"]
