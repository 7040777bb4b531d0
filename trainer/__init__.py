"""ManiVideo's lean two-stage trainer (after Animate Anyone): see trainer/train.py for the loop.

Modules, one job each: config (all defaults, presets), data (stores -> mixed item stream),
conditions (zero-fill, D, flip, jitter on device), embeddings (G, E_F, E_N), reference_attention
(paired writer/reader processors), model (assembly), checkpoint (exact resume, export),
train (the loop), sample (DDIM + video), metrics (region PSNR/SSIM), commands (CLI).
"""
