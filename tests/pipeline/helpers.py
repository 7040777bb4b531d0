"""Small helpers shared by pipeline tests (no mocks: they build real jobs and stores)."""

from pathlib import Path

from pipeline.objaverse import job as objaverse_job
from schemas.config import RenderConfig

SMALL = dict(frames=4, resolution=64, samples_per_shard=2)


def small_job(out: Path, source: str = "builtin", **kw):
    cfg_kw = {**SMALL, **{k: v for k, v in kw.items() if k in RenderConfig.__dataclass_fields__}}
    job_kw = {k: v for k, v in kw.items() if k not in RenderConfig.__dataclass_fields__}
    cfg = RenderConfig(**cfg_kw).validate()
    return objaverse_job.build_job(source, out, cfg, **job_kw), cfg
