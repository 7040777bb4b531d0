"""The conditions of a whole hand-object motion, rendered in-process by the HOI job's own code:
what ``render-hoi sequence`` would store for one (sequence folder, camera), as one clip of all
its frames. ``python cli.py generate`` passes this to ``trainer.generate`` (the trainer reads
stores and samples; it does not import a job folder).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError


def render_conditions(folder: Path, camera: str | None, resolution: int, hand_model: str = "mano",
                      mano_dir: str | None = None, log=print) -> tuple[dict, dict]:
    """The contract sample (all frames of the sequence, one crop) rendered by the HOI pipeline's own
    code, and a description of what was used."""
    from pipeline.hands.model import hand_models
    from pipeline.hoi.adapter import make_selection
    from pipeline.hoi.clip_sample import ObjectModel, build_sample, load_layer_object
    from pipeline.hoi.datasets.sequence import SequenceAdapter
    from pipeline.render.workers import worker_renderers
    from pipeline.sequence_format import read_sequence
    from schemas.config import ConfigError, HoiConfig

    folder = Path(folder)
    if not (folder / "sequence.json").is_file():
        raise UserError(f"--sequence {folder} is not a sequence folder (no sequence.json); write one with "
                        "python cli.py export-sequence")
    seq = read_sequence(folder)
    n = seq.n_frames
    if camera is not None and camera not in seq.cameras:
        raise UserError(f"--camera {camera!r} is not in {folder / 'cameras.json'} (has {', '.join(sorted(seq.cameras))})")
    try:
        hoi = HoiConfig(frames=n, resolution=resolution, hand_model=hand_model, samples_per_shard=1,
                        fix_left_shapedirs=bool(seq.fix_left_shapedirs),
                        max_padding=1.0).validate()  # a new motion is rendered whatever its crop
    except ConfigError as e:
        raise UserError(str(e)) from None
    adapter = SequenceAdapter()
    sel = make_selection(frames=n, min_valid_frames=0.0, cameras=[camera] if camera else None)
    item = adapter.list_items(folder, sel)[0]
    models = hand_models(hoi.hand_model, mano_dir, hoi.fix_left_shapedirs)
    renderers = worker_renderers(hoi.resolution, hoi.ref_yfov_deg)
    frame_ids = adapter.windows(folder, item, sel)[0]
    log(f"rendering the conditions of {item.key}: {n} frames at {resolution} px (MLO layers, D, references, points)")
    clip = adapter.load_clip(folder, item, frame_ids, models)
    obj = None
    if clip.object_mesh is not None:
        # the object's id seeds its points: the same rule as render-hoi (pipeline.hoi.job)
        uid = clip.object_uid or clip.object_mesh.parent.name
        loaded = load_layer_object(uid, str(clip.object_mesh))
        obj = ObjectModel.build(loaded, renderers.rgb, hoi)
    sample = build_sample(clip, adapter.background(folder, item), models, obj, renderers.layers, hoi)
    used = {"sequence": str(folder.resolve()), "item": item.key, "frames": n, "hand_model": hoi.hand_model,
            "object_mesh": str(clip.object_mesh) if clip.object_mesh is not None else None}
    return sample, used
