"""The small interface every hand-object dataset implements (DexYCB now; ARCTIC, HO3D,
OakInk2, TACO are one file each).

An adapter lists work items (one item = one sequence seen by one camera) and loads a
window of frames of an item as a ``ClipData``: plain arrays, OpenCV camera frame, metres.
Everything after that (crop, MLO rendering, reference views, points, joints, the store
sample) is shared code in ``pipeline.hoi.clip_sample``.

Conventions of ``ClipData`` (OpenCV camera: x right, y down, z forward):
  * ``K`` [3,3]: intrinsics of ``images``, OpenCV pixel convention (pixel i's centre at i);
  * hand ``pose`` [T,48]: absolute axis-angle (``hands_mean`` included, PCA already
    converted with the hand model's ``hands_components``), ``trans`` [T,3] m, ``betas`` [10];
  * ``object_poses`` [T,4,4]: object-file frame (metres) -> camera; this places the object
    *at rest* (``object_mesh`` as the file holds it), which is what ``obj_rot``/``obj_trans``
    store and what reference views and points show. A mesh file in other units carries its
    unit as a uniform scale here (TACO's ``_cm.obj``: pose @ diag(0.01, 0.01, 0.01, 1));
  * ``object_parts`` (optional): the object layer as rigid parts when it is not simply
    ``object_mesh`` moved by ``object_poses`` -- an articulated object (ARCTIC: top and
    bottom, the top turned by the articulation angle) or several manipulated objects sharing
    the one object layer. Each part: vertices [V,3] metres in its own frame, faces [F,3],
    poses [T,4,4] part -> camera (OpenCV). When given, the layer (and the crop) use the parts;
  * frames where a hand / the object is not annotated have ``valid`` False;
  * a moving camera (a head-mounted view) is read frame by frame: every array above is in
    *that frame's* camera, so nothing else is needed, except that one scene reference per
    item does not fit a moving view: such an adapter gives the window's own reference in
    ``background`` (uint8 [H,W,3], same pixels as ``images``), used instead of the item's
    ``HoiAdapter.background`` (None: the item's).
  * ``image_valid`` (optional) [T,H,W] bool: the pixels of ``images`` the camera saw. None = all
    of them. An adapter sets it when part of a frame is not the camera's picture: a dataset that
    ships only its own crops, put back in the full frame (ARCTIC ``cropped_images``), or an
    undistorted lens view whose corners map outside the recorded image (ARCTIC's egocentric view).

What the shared clip builder does with it, for every adapter (``clip_sample.build_sample``): the
crop box holds every annotated hand/object vertex that projects inside the image, is shifted to
stay inside the image whenever it fits and padded (black) only when it cannot; the sample's
``valid`` [T,R,R] marks the crop pixels that come from the camera image (inside the image and
``image_valid``); ``hand_inside`` [T,2] is the fraction of each hand's vertices that project onto a
valid source pixel; a window whose crop is more than ``HoiConfig.max_padding`` padding in some
frame is not written (counted in the run summary). So an adapter must give: ``images`` at their
full size, ``K`` of those images (a moving camera: per-frame poses are simply the per-frame
``pose``/``trans``/``object_poses``, all in that frame's camera), and ``image_valid`` where some
pixels of a frame are not the camera's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.engine.items import WorkItem


@dataclass
class HandClip:
    """One hand over the window: pose [T,48], betas [10], trans [T,3], valid [T] bool."""

    pose: np.ndarray
    betas: np.ndarray
    trans: np.ndarray
    valid: np.ndarray


@dataclass
class ObjectPart:
    """One rigid part of the object layer: vertices [V,3] (metres, part frame), faces [F,3]
    int, poses [T,4,4] part -> camera (OpenCV)."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    poses: np.ndarray


@dataclass
class ClipData:
    """A window of T frames of one item (sequence x camera)."""

    key: str
    frame_ids: list[int]             # source frame numbers
    images: np.ndarray               # [T,H,W,3] uint8 RGB
    K: np.ndarray                    # [3,3] float64, OpenCV pixel convention
    hands: dict[str, HandClip]       # "left"/"right" -> params (a side missing = not in the data)
    object_mesh: Path | None         # mesh file of the object layer (metres, its own frame)
    object_poses: np.ndarray         # [T,4,4] object -> camera (OpenCV)
    object_valid: np.ndarray         # [T] bool
    extras: dict = field(default_factory=dict)
    object_uid: str | None = None    # the object model's id (seeds its points); default: mesh folder name
    object_parts: list[ObjectPart] | None = None  # the layer as rigid parts (articulated / several objects)
    joints_label: dict[str, np.ndarray] | None = None  # side -> [T,21,3] dataset 3D joint labels (OpenCV, m),
    #   NaN where a frame has none; compared with our MANO joints (``--max-joint-error-mm``)
    background: np.ndarray | None = None  # uint8 [H,W,3]: this window's scene reference (moving cameras);
    #   None: the item's ``HoiAdapter.background``
    image_valid: np.ndarray | None = None  # [T,H,W] bool: pixels of ``images`` the camera saw (None: all)


class HoiAdapter(Protocol):
    """What a dataset provides. Implementations raise ``UserError`` for a bad root/selection
    (driver side) and ``StepFailed`` for a broken item (worker side)."""

    name: str
    # MANO_LEFT shapedirs x negated (smplx issue #48 fix) when the dataset was annotated:
    # the default of ``--fix-left-shapedirs/--no-fix-left-shapedirs``
    fix_left_shapedirs: bool
    # set by ``list_items``: windows dropped by ``selection["min_valid_frames"]``
    skipped_windows: int

    def list_items(self, root: Path, selection: dict) -> list[WorkItem]:
        """Items under ``root`` picked by ``selection`` (dataset-specific keys, e.g. subjects,
        sequences, cameras, frames, stride). ``n_samples`` = number of T-frame windows."""

    def windows(self, root: Path, item: WorkItem, selection: dict) -> list[list[int]]:
        """The frame ids of each of the item's ``n_samples`` windows, in sample order."""

    def load_clip(self, root: Path, item: WorkItem, frame_ids: list[int], hand_models: dict) -> ClipData:
        """The window ``frame_ids`` of ``item``; ``hand_models`` (side -> HandModel) converts
        dataset pose encodings (e.g. PCA) to absolute axis-angle."""

    def background(self, root: Path, item: WorkItem) -> np.ndarray:
        """uint8 [H,W,3] scene reference of the item's camera (the dataset's best choice)."""


def make_selection(frames: int, stride: int = 1, min_valid_frames: float = 0.5, split: str | None = None,
                   subjects: list[str] | None = None, sequences: list[str] | None = None,
                   cameras: list[str] | None = None) -> dict:
    """The ``selection`` every adapter reads: T frames per window every ``stride``-th frame;
    windows with a hand in fewer than ``min_valid_frames`` of them are dropped; an official
    ``split`` name; ``subjects``/``sequences``/``cameras`` as ``pick_names`` reads them (None or
    empty: all)."""
    return {"subjects": subjects or None, "sequences": sequences or None, "cameras": cameras or None,
            "split": split, "frames": frames, "stride": stride, "min_valid_frames": min_valid_frames}


def pick_names(names: list[str], wanted: list[str] | None) -> list[str]:
    """The ``names`` a selection option keeps (``--subjects``/``--sequences``/``--cameras``): each
    matches a wanted value exactly or as a suffix (e.g. 'subject-01'); all when none is given."""
    if not wanted:
        return names
    return [n for n in names if any(n == str(w) or n.endswith(str(w)) for w in wanted)]
