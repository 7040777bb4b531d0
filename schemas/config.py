"""The pipeline's configuration, in code and validated.

A config is a frozen dataclass; ``validate()`` raises ``ConfigError`` with a one-line
message naming the bad option. A job's identity (for resume) is hashed by
``pipeline.runner.Job.fingerprint`` from the options it sends to workers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OBJECT_RADIUS = 0.5  # canonical objects fit a sphere of this radius about their origin


def min_cam_distance(yfov_deg: float) -> float:
    """Closest camera distance at which the whole canonical object fits the view at rest."""
    return OBJECT_RADIUS / math.sin(math.radians(yfov_deg) / 2) * 1.05


class ConfigError(ValueError):
    """A bad option value. The message is one line and names the option."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


class _ConfigDict:
    """dict round trip shared by the configs (options travel to workers as JSON)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        _check(not unknown, f"unknown config keys: {sorted(unknown)}")
        return cls(**d).validate()


@dataclass(frozen=True)
class RenderConfig(_ConfigDict):
    """How objects become samples. Units: metres / scene units, degrees, seconds, pixels.

    The object is normalised to its canonical frame (bounding-box centre at the origin,
    farthest vertex at radius 0.5) and moves along a trajectory in front of a fixed camera
    at ``(0, 0, cam_distance)`` looking down -z (OpenGL convention).
    """

    frames: int = 24                 # T, frames per clip
    resolution: int = 512            # R, square image side
    yfov_deg: float = 40.0           # vertical field of view
    cam_distance: float = 2.5        # camera distance from the world origin
    clips_per_object: int = 1        # clips (trajectories) rendered per object
    seed: int = 0                    # global seed; each (seed, uid, clip) gets its own stream
    samples_per_shard: int = 0       # samples one task writes = one shard; 0 = auto (runner)
    max_rotation_deg: float = 150.0  # total rotation over a clip at most this (smooth motion)
    max_faces: int = 2_000_000       # refuse bigger meshes (memory / decompression bombs)
    max_texture_px: int = 2048       # textures are downscaled to at most this side
    max_file_mb: float = 512.0       # refuse bigger mesh files before reading them
    timeout_s: float = 600.0         # per object; hung work is killed and recorded
    normalise: str = "bulk"          # canonical frame: "bulk" of the surface area or "bbox" (pipeline.assets.mesh_io)
    min_faces: int = 0               # objects with fewer faces are recorded as not selected
    min_coverage: float = 0.002      # an object below this pixel fraction in all 6 reference views fails
    rgb_renderer: str = "atlas"      # "atlas" (own PBR shader, one atlas pass) or "pyrender" (pipeline.render)

    def validate(self) -> RenderConfig:
        _check(1 <= self.frames <= 1024, f"--frames must be in 1..1024, got {self.frames}")
        _check(16 <= self.resolution <= 4096 and self.resolution % 8 == 0,
               f"--resolution must be a multiple of 8 in 16..4096, got {self.resolution}")
        _check(5.0 <= self.yfov_deg <= 120.0, f"--yfov must be in 5..120 degrees, got {self.yfov_deg}")
        need = min_cam_distance(self.yfov_deg)
        _check(self.cam_distance >= need,
               f"--cam-distance {self.cam_distance} is too close for a {self.yfov_deg} degree view; use >= {need:.2f}")
        _check(1 <= self.clips_per_object <= 1000, f"--clips must be in 1..1000, got {self.clips_per_object}")
        _check(0 <= self.samples_per_shard <= 4096,
               f"--samples-per-shard must be in 0..4096 (0 = auto), got {self.samples_per_shard}")
        _check(0 <= self.max_rotation_deg <= 3600, "--max-rotation must be in 0..3600 degrees")
        _check(self.max_faces >= 4, "--max-faces must be >= 4")
        _check(self.max_texture_px >= 16, "--max-texture must be >= 16")
        _check(self.timeout_s > 0, "--timeout must be > 0 seconds")
        _check(self.seed >= 0, "--seed must be >= 0")
        _check(self.normalise in ("bulk", "bbox"), f"--normalise must be 'bulk' or 'bbox', got {self.normalise!r}")
        _check(0 <= self.min_faces <= self.max_faces, f"--min-faces must be in 0..--max-faces, got {self.min_faces}")
        _check(0.0 <= self.min_coverage < 1.0, f"--min-coverage must be in [0, 1), got {self.min_coverage}")
        _check(self.rgb_renderer in ("atlas", "pyrender"),
               f"--rgb-renderer must be 'atlas' or 'pyrender', got {self.rgb_renderer!r}")
        return self



HAND_MODELS = ("mano", "stand-in")
# Default --max-padding (render-hoi, render-human): crops shift to stay inside the image, so padding
# only appears when a crop is larger than the image (hands spread wider than its short side) or
# where a dataset shows only part of the frame. Up to a quarter of padding still leaves at least 3/4
# of every frame to learn from (the loss is masked with ``valid``); beyond that a clip is mostly
# black target under full conditions, and costs a whole clip's rendering and training step for
# little signal.
MAX_PADDING = 0.25


@dataclass(frozen=True)
class HoiConfig(_ConfigDict):
    """How hand-object datasets (DexYCB, ...) become samples. Units: metres, pixels, seconds.

    One sample = T frames (every ``stride``-th source frame) of one sequence seen by one
    camera, cropped to a square around the hands and object (fixed over the T frames,
    ``crop_margin`` x the tight box) and resized to R. Reference views use the Objaverse
    field of view (``ref_yfov_deg``) on the canonicalised object model, framed per object
    (``pipeline.objects.object_refs``).
    """

    frames: int = 16                 # T
    stride: int = 1                  # take every stride-th source frame
    resolution: int = 512            # R
    samples_per_shard: int = 0       # 0 = auto (pipeline.runner.auto_samples_per_shard, at most 8)
    crop_margin: float = 1.25        # square side = margin x the larger side of the hand-object box
    min_crop_px: int = 96            # smallest crop side in source pixels
    hand_model: str = "mano"         # "mano" (user's licensed files) or "stand-in" (not MANO)
    fix_left_shapedirs: bool | None = None  # negate MANO_LEFT shapedirs x; None = the adapter's own setting
    max_joint_error_mm: float = 5.0  # a clip whose MANO joints miss the dataset's joint labels by more fails
    max_padding: float = MAX_PADDING  # a window whose crop is more padding than this (some frame) is not written
    seed: int = 0
    ref_yfov_deg: float = 40.0
    timeout_s: float = 600.0

    def validate(self) -> HoiConfig:
        _check(1 <= self.frames <= 1024, f"--frames must be in 1..1024, got {self.frames}")
        _check(1 <= self.stride <= 1000, f"--stride must be in 1..1000, got {self.stride}")
        _check(16 <= self.resolution <= 4096 and self.resolution % 8 == 0,
               f"--resolution must be a multiple of 8 in 16..4096, got {self.resolution}")
        _check(0 <= self.samples_per_shard <= 4096,
               f"--samples-per-shard must be in 0..4096 (0 = auto), got {self.samples_per_shard}")
        _check(1.0 <= self.crop_margin <= 4.0, f"--crop-margin must be in 1..4, got {self.crop_margin}")
        _check(self.min_crop_px >= 8, "--min-crop must be >= 8 pixels")
        _check(self.hand_model in HAND_MODELS, f"--hand-model must be one of {HAND_MODELS}, got {self.hand_model!r}")
        _check(self.fix_left_shapedirs in (None, True, False), "--fix-left-shapedirs must be a bool or unset")
        _check(self.max_joint_error_mm > 0, f"--max-joint-error-mm must be > 0, got {self.max_joint_error_mm}")
        _check(0.0 <= self.max_padding <= 1.0, f"--max-padding must be in 0..1, got {self.max_padding}")
        _check(self.timeout_s > 0, "--timeout must be > 0 seconds")
        _check(self.seed >= 0, "--seed must be >= 0")
        return self

