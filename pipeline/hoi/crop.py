"""The HOI job's crops: the shared square crop of ``pipeline.crop`` (also used by the human job)."""

from pipeline.crop import crop_box, crop_image, crop_intrinsics

__all__ = ["crop_box", "crop_image", "crop_intrinsics"]
