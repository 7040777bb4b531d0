"""Store introspection: what is in a store, how big it is, what failed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.engine import shard_writer
from pipeline.errors import UserError
from schemas import index as sample_index
from schemas.reader import StoreReader
from schemas.storage import is_url, open_location
from schemas.store import SchemaError


def open_reader(store) -> StoreReader:
    """A reader of ``store`` (a folder or an object-store URL); one-line UserError if it is none."""
    if not is_url(store) and not Path(store).is_dir():
        raise UserError(f"{store}: no such store folder")
    try:
        return StoreReader(store)
    except SchemaError as e:
        raise UserError(f"{store}: {e}") from None
    except OSError as e:  # a bucket we cannot read
        raise UserError(f"{store}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def inspect(store, verify: bool = False) -> dict:
    """A JSON-able report of a store. ``verify``: also read every shard file and check its CRC-32C
    against its marker (corrupt shards are listed either way, from the file sizes)."""
    reader = open_reader(store)
    loc = open_location(store)
    manifest = shard_writer.read_manifest(loc) or {}
    layout = reader.layout
    sizes = loc.list("")
    corrupt = sample_index.build(loc, deep=verify).corrupt  # checked now, not as of the last run
    arrays = {}
    for spec in layout.arrays:
        arr = reader.group[spec.name]
        arrays[spec.name] = {"shape_per_sample": list(layout.sample_shape(spec.name)), "dtype": spec.dtype,
                             "chunk": list(arr.chunks[1:]), "unit": spec.unit,
                             "bytes": sum(v for k, v in sizes.items() if k.startswith(spec.name + "/"))}
    total = sum(sizes.values())
    failures = reader.failures()
    by_reason = Counter(f"{f['stage']}: {f['reason']}" for f in failures)
    n = len(reader)
    return {
        "store": str(store), "kind": layout.kind, "schema_version": reader.schema_version,
        "frames": layout.frames, "resolution": layout.resolution, "layers": list(layout.layers),
        "samples": n, "shards_complete": reader.n_shards_complete, "shards_planned": manifest.get("n_shards"),
        "items_planned": manifest.get("n_items"), "items_failed": len(failures),
        "bytes": total, "bytes_per_sample": total / n if n else None,
        "arrays": arrays, "failures_by_reason": dict(by_reason.most_common()),
        "title": manifest.get("title"),
        "failure_details": {f"{f['stage']}: {f['reason']}": f["detail"] for f in reversed(failures) if f.get("detail")},
        "quality": quality_summary(reader),
        "padding": padding_summary(reader),
        # shards left out: their marker or files are not what was written (--retry-failed redoes them)
        "corrupt_shards": corrupt,
        # the held-out split (schemas.split): by item key, 3%; official_split: render-hoi --split
        "split": {"train": n - reader.n_test, "test": reader.n_test, "official_split": reader.official_split},
    }


# per-sample figures (attrs) summarised by inspect: Objaverse quality (render-objaverse) and the
# agreement of our MANO joints with the dataset's labels (render-hoi, where labels exist)
QUALITY_KEYS = ("coverage_frames", "coverage_refs", "faces", "outside_area", "joint_err_mean_mm", "joint_err_max_mm",
                "padding_max", "hand_inside_min")


def padding_summary(reader: StoreReader) -> dict | None:
    """How much of a camera store's crops is padding (pixels not from the camera image: ``valid``
    False), from the samples' attrs ``padding_mean`` / ``padding_max`` (render-hoi, render-human):
    the padded fraction of all crop pixels, and how many samples have any padding; None for a store
    without camera crops (Objaverse) or whose samples do not record it."""
    if "valid" not in reader.array_names:
        return None
    means, maxes = [], []
    for i in range(len(reader)):
        a = reader.attrs(i)
        if "padding_mean" in a:
            means.append(float(a["padding_mean"]))
            maxes.append(float(a.get("padding_max", a["padding_mean"])))
    if not means:
        return None
    return {"fraction": float(np.mean(means)), "samples_with_padding": int(sum(m > 0 for m in maxes)),
            "samples": len(means), "worst_frame": float(max(maxes))}


def quality_summary(reader: StoreReader) -> dict:
    """Per-sample figures (``QUALITY_KEYS`` of the attrs) over the store: for each figure the
    min / median / max over samples (coverage: a sample's mean over its frames or views),
    and how many samples are textured where that is recorded; {} when no sample has them."""
    values: dict[str, list[float]] = {k: [] for k in QUALITY_KEYS}
    textured, has_textured = 0, False
    for i in range(len(reader)):
        a = reader.attrs(i)
        for k in QUALITY_KEYS:
            if k in a:
                values[k].append(float(np.mean(a[k])))
        textured += bool(a.get("textured"))
        has_textured |= "textured" in a
    out = {k: {"min": min(v), "median": float(np.median(v)), "max": max(v)} for k, v in values.items() if v}
    if out and has_textured:
        out["textured"] = textured
    return out


def format_report(r: dict) -> str:
    mib = 2**20
    lines = [
        f"store        {r['store']}  ({r['title']})",
        f"kind         {r['kind']}  schema v{r['schema_version']}  T={r['frames']}  R={r['resolution']}",
        f"layers       {', '.join(r['layers']) or 'none (human store: no MLO layers, no object)'}",
        f"samples      {r['samples']} valid; shards {r['shards_complete']}/{r['shards_planned']} complete; "
        f"{r['items_failed']} items failed",
        f"split        {r['split']['train']} train / {r['split']['test']} test (held out by item key, "
        f"schemas.split)" + (f"; made from official split {r['split']['official_split']}"
                             if r["split"]["official_split"] else ""),
        f"size         {r['bytes'] / mib:.2f} MiB on disk"
        + (f", {r['bytes_per_sample'] / mib:.2f} MiB per sample" if r["bytes_per_sample"] else ""),
        "",
        f"{'array':<15}{'shape per sample':<28}{'dtype':<9}{'chunk':<24}{'MiB':>8}",
    ]
    for name, a in r["arrays"].items():
        lines.append(f"{name:<15}{str(tuple(a['shape_per_sample'])):<28}{a['dtype']:<9}"
                     f"{str(tuple(a['chunk'])):<24}{a['bytes'] / mib:>8.2f}")
    if r.get("padding"):
        pd = r["padding"]
        lines.insert(lines.index("") if "" in lines else len(lines),
                     f"padding      {pd['fraction']:.2%} of crop pixels are not from the camera image (valid False); "
                     f"{pd['samples_with_padding']} of {pd['samples']} samples have some, worst frame "
                     f"{pd['worst_frame']:.1%}")
    if r.get("quality"):
        q = r["quality"]
        textured = f" ({q['textured']} of {r['samples']} samples textured)" if "textured" in q else ""
        lines += ["", f"per-sample figures{textured}   min / median / max"]
        lines += [f"  {k:<16}{v['min']:>10.4g}{v['median']:>10.4g}{v['max']:>10.4g}" for k, v in q.items()
                  if isinstance(v, dict)]
    if r.get("corrupt_shards"):
        c = r["corrupt_shards"]
        lines += ["", f"corrupt shards: {len(c)}, left out of the samples (redo them: the render command with "
                      "--retry-failed)"] + [f"  shard {x['shard']}: {x['reason']}" for x in c[:10]]
        if len(c) > 10:
            lines.append(f"  ... and {len(c) - 10} more")
    if r["failures_by_reason"]:
        lines += ["", "failures by reason:"] + [f"  {n:>5}  {k}" for k, n in r["failures_by_reason"].items()]
        details = r.get("failure_details") or {}
        lines += [f"  e.g. {k}: {details[k].splitlines()[0][:150]}" for k in r["failures_by_reason"] if k in details]
    return "\n".join(lines)
