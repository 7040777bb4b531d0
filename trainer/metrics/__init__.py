"""Evaluation metrics. ``trainer.metrics`` keeps its original API (masked PSNR / SSIM, image.py);
the network metrics live in submodules: inception.py + frechet.py (FID), lpips.py, fvd.py (I3D),
hands.py (hand keypoint error), region.py (the hand-object crop)."""

from trainer.metrics.image import masked_psnr, masked_ssim, ssim_map

__all__ = ["masked_psnr", "masked_ssim", "ssim_map"]
