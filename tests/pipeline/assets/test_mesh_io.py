"""Untrusted meshes: good ones load into the canonical frame, bad ones are rejected with a reason."""

import struct
import zlib

import numpy as np
import pytest
import trimesh
from PIL import Image

from pipeline.assets.mesh_io import MeshRejected, canonicalise, load_object

CAPS = dict(max_file_mb=64, max_faces=100_000, max_texture_px=64)


def _obj(path, verts, faces, extra=""):
    lines = [extra] + [f"v {x} {y} {z}" for x, y, z in verts] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


TRI = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]


def test_builtin_objects_load_into_the_unit_sphere(builtin_dir):
    for path in sorted(builtin_dir.glob("*.glb")):
        obj = load_object(path.stem, path, **CAPS)
        r = np.linalg.norm(obj.mesh.vertices, axis=1)
        assert r.max() == pytest.approx(0.5, abs=1e-9)
        lo, hi = obj.mesh.bounds
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(obj.mesh.vertex_normals, axis=1), 1, atol=1e-6)


def test_nested_transforms_are_applied(builtin_dir):
    # the mug's handle is a child node placed at the body's side: it must stick out in x
    obj = load_object("mug", builtin_dir / "builtin-striped_mug.glb", **CAPS)
    ext = obj.mesh.extents
    assert ext[0] > ext[2] * 1.2


@pytest.mark.parametrize("name, make, stage, reason", [
    ("empty.obj", lambda p: _obj(p, TRI, []), "validate", "no triangles"),
    ("huge.obj", lambda p: _obj(p, [(0, 0, 0), (1e9, 0, 0), (0, 1e9, 0)], [(0, 1, 2)]), "validate", "absurd"),
    ("tiny.obj", lambda p: _obj(p, [(0, 0, 0), (1e-9, 0, 0), (0, 1e-9, 0)], [(0, 1, 2)]), "validate", "absurd"),
    ("garbage.glb", lambda p: p.write_bytes(b"glTF\x02\x00\x00\x00" + bytes(range(256)) * 4), "load", "cannot parse"),
    ("model.fbx", lambda p: p.write_bytes(b"x"), "load", "unsupported"),
])
def test_broken_meshes_are_rejected_with_stage_and_reason(tmp_path, name, make, stage, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(MeshRejected) as e:
        load_object(name, path, **CAPS)
    assert e.value.stage == stage and reason in e.value.reason
    assert "\n" not in e.value.reason


def test_non_finite_vertices_are_rejected():
    # trimesh's file loaders already drop non-finite vertices; scenes built in code may not
    mesh = trimesh.Trimesh([(0, 0, 0), (1, 0, 0), (np.nan, 1, 0)], [(0, 1, 2)], process=False)
    with pytest.raises(MeshRejected, match="NaN"):
        canonicalise("nan", trimesh.Scene(mesh), max_faces=10)


def test_face_and_file_size_caps(tmp_path, builtin_dir):
    with pytest.raises(MeshRejected, match="faces"):
        load_object("cube", builtin_dir / "builtin-checker_cube.glb", max_file_mb=64, max_faces=10, max_texture_px=64)
    with pytest.raises(MeshRejected, match="MB"):
        load_object("cube", builtin_dir / "builtin-globe.glb", max_file_mb=0.001, max_faces=10**6, max_texture_px=64)


def _textured_obj(folder, texture_ref):
    (folder / "m.mtl").write_text(f"newmtl mat\nKd 1 1 1\nmap_Kd {texture_ref}\n")
    verts = TRI + [(1, 1, 0)]
    text = "mtllib m.mtl\n" + "".join(f"v {x} {y} {z}\n" for x, y, z in verts)
    text += "vt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\nusemtl mat\nf 1/1 2/2 3/3\nf 2/2 4/4 3/3\n"
    (folder / "m.obj").write_text(text)
    return folder / "m.obj"


def _images(obj):
    out = []
    for g in obj.scene.geometry.values():
        mat = getattr(g.visual, "material", None)
        for attr in ("image", "baseColorTexture"):
            img = getattr(mat, attr, None)
            if isinstance(img, Image.Image):
                out.append(img)
    return out


def _loaded_or_rejected(path, reason):
    """The loaded object, or None if it was rejected at load (with ``reason``, or by the parser)."""
    try:
        return load_object("m", path, **CAPS)
    except MeshRejected as e:
        assert reason in e.reason or e.stage == "load"
        return None


def test_texture_paths_never_leave_the_mesh_folder(tmp_path):
    inside = tmp_path / "mesh"
    inside.mkdir()
    Image.new("RGB", (7, 13), (255, 0, 0)).save(tmp_path / "secret.png")  # outside the mesh folder
    obj = _loaded_or_rejected(_textured_obj(inside, "../secret.png"), "leaves the mesh folder")
    assert obj is None or all(img.size != (7, 13) for img in _images(obj))


def test_textures_are_downscaled_to_the_cap(tmp_path):
    Image.new("RGB", (300, 200), (0, 128, 255)).save(tmp_path / "tex.png")
    obj = load_object("m", _textured_obj(tmp_path, "tex.png"), **CAPS)
    sizes = [img.size for img in _images(obj)]
    assert sizes and all(max(s) <= 64 for s in sizes)


def _png_claiming(width, height):
    """A tiny valid PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_textures_are_never_decoded(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_claiming(40000, 40000))
    obj = _loaded_or_rejected(_textured_obj(tmp_path, "bomb.png"), "texture too large")
    assert obj is None or all(max(img.size) <= 64 for img in _images(obj))


def test_mirrored_instances_keep_outward_normals():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    scene = trimesh.Scene()
    scene.add_geometry(sphere, node_name="a", transform=trimesh.transformations.translation_matrix([-2, 0, 0]))
    mirror = np.diag([-1.0, 1, 1, 1])
    mirror[0, 3] = 2.0
    scene.add_geometry(sphere, node_name="b", transform=mirror)
    obj = canonicalise("m", scene, max_faces=10**5)
    mesh = obj.mesh
    centres = np.where(mesh.triangles_center[:, :1] < 0, [[-0.25, 0, 0]], [[0.25, 0, 0]])
    outward = (mesh.face_normals * (mesh.triangles_center - centres)).sum(axis=1)
    assert (outward > 0).all()
