"""Offline data pipeline: meshes and hand-object datasets -> multi-layer occlusion Zarr stores."""
