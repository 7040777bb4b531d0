"""How person videos become human samples (validated; travels to the workers as JSON)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.config import MAX_PADDING, ConfigError, _ConfigDict


@dataclass(frozen=True)
class HumanConfig(_ConfigDict):
    frames: int = 16                 # T, frames per sample (window)
    stride: int = 1                  # take every stride-th source frame
    resolution: int = 512            # R, square crop side after resizing
    samples_per_shard: int = 0       # 0 = auto (up to 8)
    crop_margin: float = 1.3         # crop side = margin x the larger side of the clip's keypoint box
    min_crop_px: int = 64            # smallest crop side in source pixels
    min_person_frames: float = 0.5   # a clip with a person in fewer of its frames fails ("no person")
    max_clips_per_video: int = 0     # 0 = every window of the video
    max_padding: float = MAX_PADDING  # a clip whose crop is more padding than this (some frame) is not written
    timeout_s: float = 600.0

    def validate(self) -> HumanConfig:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        check(self.frames >= 1, f"--frames must be >= 1, got {self.frames}")
        check(self.stride >= 1, f"--stride must be >= 1, got {self.stride}")
        check(self.resolution >= 8 and self.resolution % 8 == 0,
              f"--resolution must be a multiple of 8 and >= 8, got {self.resolution}")
        check(self.samples_per_shard >= 0, "--samples-per-shard must be >= 0")
        check(1.0 <= self.crop_margin <= 4.0, f"--crop-margin must be in 1..4, got {self.crop_margin}")
        check(self.min_crop_px >= 8, "--min-crop must be >= 8 pixels")
        check(0.0 < self.min_person_frames <= 1.0, "--min-person-frames must be in (0, 1]")
        check(self.max_clips_per_video >= 0, "--max-clips-per-video must be >= 0")
        check(0.0 <= self.max_padding <= 1.0, f"--max-padding must be in 0..1, got {self.max_padding}")
        check(self.timeout_s > 0, "--timeout must be > 0 seconds")
        return self
