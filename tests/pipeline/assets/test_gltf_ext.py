"""glTF as real files use it: Draco geometry, percent-encoded URIs, required extensions.

Files are assembled here byte by byte from the Khronos specs (glTF 2.0 GLB container;
KHR_draco_mesh_compression), not exported by the library that reads them.
"""

import io
import json
import struct

import DracoPy
import numpy as np
import pytest
import trimesh
from PIL import Image

from pipeline.assets.gltf_ext import DRACO
from pipeline.assets.mesh_io import MeshRejected, load_object

CAPS = dict(max_file_mb=64, max_faces=100_000, max_texture_px=64)
FLOAT, UINT32, TRIANGLES = 5126, 5125, 4


def glb_bytes(tree: dict, binary: bytes) -> bytes:
    """A GLB container: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
    body = json.dumps(tree).encode()
    body += b" " * (-len(body) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(body), 0x4E4F534A) + body + struct.pack("<II", len(binary), 0x004E4942) + binary
    return b"glTF" + struct.pack("<II", 2, 12 + len(chunks)) + chunks


def _png(size=8) -> bytes:
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = (255, 0, 0)
    img[:, size // 2:] = (0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def draco_glb(mesh: trimesh.Trimesh, uv: np.ndarray) -> tuple[bytes, dict]:
    """A Draco-compressed, textured GLB of ``mesh``; returns (file bytes, the extension's id map).

    DracoPy numbers attributes as it pleases (here TEX_COORD 0, NORMAL 1, POSITION 2); the
    extension's ``attributes`` maps each glTF name to that unique id, read back from a decode.
    """
    blob = DracoPy.encode(mesh.vertices, mesh.faces, tex_coord=uv, normals=mesh.vertex_normals,
                          quantization_bits=14)
    decoded = DracoPy.decode(blob)
    kinds = {DracoPy.AttributeType.POSITION: "POSITION", DracoPy.AttributeType.NORMAL: "NORMAL",
             DracoPy.AttributeType.TEX_COORD: "TEXCOORD_0"}
    id_map = {kinds[a["attribute_type"]]: a["unique_id"] for a in decoded.attributes}
    png = _png()
    binary = blob + b"\0" * (-len(blob) % 4)
    png_offset = len(binary)
    binary += png
    nv, nf = len(decoded.points), len(decoded.faces)
    tree = {
        "asset": {"version": "2.0", "generator": "manivideo test"},
        "extensionsUsed": [DRACO], "extensionsRequired": [DRACO],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(blob)},
                        {"buffer": 0, "byteOffset": png_offset, "byteLength": len(png)}],
        # accessors of a Draco primitive have no bufferView: the data comes from the decoder
        "accessors": [
            {"componentType": FLOAT, "count": nv, "type": "VEC3",
             "min": mesh.vertices.min(0).tolist(), "max": mesh.vertices.max(0).tolist()},
            {"componentType": FLOAT, "count": nv, "type": "VEC3"},
            {"componentType": FLOAT, "count": nv, "type": "VEC2"},
            {"componentType": UINT32, "count": 3 * nf, "type": "SCALAR"},
        ],
        "images": [{"bufferView": 1, "mimeType": "image/png"}],
        "textures": [{"source": 0}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "meshes": [{"primitives": [{
            "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2}, "indices": 3, "mode": TRIANGLES,
            "material": 0, "extensions": {DRACO: {"bufferView": 0, "attributes": id_map}}}]}],
        "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0,
    }
    return glb_bytes(tree, binary), id_map


def test_draco_glb_decodes_with_the_attribute_mapping(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    mesh.apply_translation([10.0, 0, 0])
    mesh.vertices[:, 1] *= 0.5  # an ellipsoid: POSITION swapped with NORMAL would show
    uv = np.stack([(mesh.vertices[:, 0] - 7) / 6, (mesh.vertices[:, 2] + 3) / 6], axis=1)
    data, id_map = draco_glb(mesh, uv)
    assert id_map["POSITION"] != 0  # the mapping is not the trivial order: it matters
    (tmp_path / "d.glb").write_bytes(data)
    obj = load_object("d", tmp_path / "d.glb", **CAPS)
    geom = next(iter(obj.scene.geometry.values()))
    v = np.asarray(geom.vertices)
    assert len(geom.faces) == len(mesh.faces) and np.ptp(v, axis=0).max() > 5  # not placeholder zeros
    # every decoded vertex is an original one (14-bit quantization) with its own uv and normal
    _, idx = trimesh.proximity.ProximityQuery(mesh).vertex(v)
    assert np.abs(v - mesh.vertices[idx]).max() < 6 * 2**-13
    # trimesh stores uv with v up (glTF's v runs down the image): (u, 1 - v)
    np.testing.assert_allclose(geom.visual.uv, np.stack([uv[idx, 0], 1 - uv[idx, 1]], 1), atol=2e-3)
    np.testing.assert_allclose(geom.vertex_normals, mesh.vertex_normals[idx], atol=0.02)
    assert isinstance(geom.visual.material.baseColorTexture, Image.Image)
    np.testing.assert_allclose(obj.mesh.extents / obj.mesh.extents.max(), [1, 0.5, 1], atol=0.01)


def test_draco_with_a_broken_mapping_or_blob_is_rejected(tmp_path):
    mesh = trimesh.creation.box()
    data, id_map = draco_glb(mesh, np.zeros((len(mesh.vertices), 2)))
    tree_len = struct.unpack_from("<I", data, 12)[0]
    tree = json.loads(data[20:20 + tree_len])
    binary = data[20 + tree_len + 8:]
    tree["meshes"][0]["primitives"][0]["extensions"][DRACO]["attributes"]["NORMAL"] = 7
    (tmp_path / "map.glb").write_bytes(glb_bytes(tree, binary))
    with pytest.raises(MeshRejected, match="Draco attribute mapping") as e:
        load_object("m", tmp_path / "map.glb", **CAPS)
    assert "NORMAL" in e.value.detail
    (tmp_path / "blob.glb").write_bytes(glb_bytes(json.loads(data[20:20 + tree_len]), b"\x01" * len(binary)))
    with pytest.raises(MeshRejected, match="Draco data cannot be decoded"):
        load_object("b", tmp_path / "blob.glb", **CAPS)


def _plain_gltf(buffer_uri: str, verts: np.ndarray, faces: np.ndarray) -> tuple[dict, bytes]:
    binary = verts.astype(np.float32).tobytes() + faces.astype(np.uint32).tobytes()
    nv = len(verts)
    tree = {
        "asset": {"version": "2.0"},
        "buffers": [{"uri": buffer_uri, "byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": nv * 12},
                        {"buffer": 0, "byteOffset": nv * 12, "byteLength": faces.size * 4}],
        "accessors": [{"bufferView": 0, "componentType": FLOAT, "count": nv, "type": "VEC3",
                       "min": verts.min(0).tolist(), "max": verts.max(0).tolist()},
                      {"bufferView": 1, "componentType": UINT32, "count": faces.size, "type": "SCALAR"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0,
    }
    return tree, binary


def test_percent_encoded_buffer_uri_loads_and_escapes_are_refused(tmp_path):
    box = trimesh.creation.box(extents=(1, 2, 3))
    folder = tmp_path / "model"
    folder.mkdir()
    tree, binary = _plain_gltf("Unicode%20%E2%9D%A4%E2%99%BB%20Binary.bin", box.vertices, box.faces)
    (folder / "Unicode ❤♻ Binary.bin").write_bytes(binary)
    (folder / "u.gltf").write_text(json.dumps(tree))
    obj = load_object("u", folder / "u.gltf", **CAPS)
    np.testing.assert_allclose(obj.mesh.extents / obj.mesh.extents.max(), [1 / 3, 2 / 3, 1], atol=1e-6)
    # an encoded ../ must not reach a file beside the model folder
    (tmp_path / "secret.bin").write_bytes(binary)
    for uri in ("..%2Fsecret.bin", "%2E%2E/secret.bin", "..%2f..%2f" + "etc/passwd"):
        tree["buffers"][0]["uri"] = uri
        (folder / "x.gltf").write_text(json.dumps(tree))
        with pytest.raises(MeshRejected) as e:
            load_object("x", folder / "x.gltf", **CAPS)
        assert e.value.reason == "an asset path leaves the mesh folder", uri


@pytest.mark.parametrize("name", ["EXT_meshopt_compression", "KHR_texture_basisu", "VENDOR_made_up"])
def test_unsupported_required_extension_says_which(tmp_path, name):
    box = trimesh.creation.box()
    tree, binary = _plain_gltf("unused", box.vertices, box.faces)
    del tree["buffers"][0]["uri"]
    tree["extensionsUsed"] = tree["extensionsRequired"] = [name]
    (tmp_path / "e.glb").write_bytes(glb_bytes(tree, binary))
    with pytest.raises(MeshRejected) as e:
        load_object("e", tmp_path / "e.glb", **CAPS)
    assert (e.value.stage, e.value.reason) == ("load", f"unsupported glTF extension {name}")
    assert e.value.detail


def test_an_approximated_required_extension_still_loads(tmp_path):
    box = trimesh.creation.box()
    tree, binary = _plain_gltf("unused", box.vertices, box.faces)
    del tree["buffers"][0]["uri"]
    tree["extensionsUsed"] = tree["extensionsRequired"] = ["KHR_materials_unlit"]
    (tmp_path / "u.glb").write_bytes(glb_bytes(tree, binary))
    assert len(load_object("u", tmp_path / "u.glb", **CAPS).mesh.faces) == 12
