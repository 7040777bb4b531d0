"""Reading untrusted input files inside a worker: meshes into the canonical object frame
(``mesh_io``), the glTF pre-flight (``gltf_ext``: extensions, Draco), dataset images (``images``).
A file that cannot be read is the item's recorded failure, never a traceback."""
