"""What a refused write into a store reads as (``pipeline.errors.storage_error``)."""

import errno

from pipeline.errors import NoSpaceLeft, StorageError, WriteRefused, storage_error


def test_refused_writes_map_to_one_line_naming_the_store():
    out = "/data/objaverse.zarr"
    cases = {errno.ENOSPC: (NoSpaceLeft, "no space left on the device holding /data/objaverse.zarr"),
             errno.EDQUOT: (NoSpaceLeft, "the disk quota is exceeded on the device holding"),
             errno.EROFS: (WriteRefused, "the device holding /data/objaverse.zarr is read-only"),
             errno.EACCES: (WriteRefused, "permission denied writing into /data/objaverse.zarr"),
             errno.EPERM: (WriteRefused, "not permitted")}
    for code, (kind, text) in cases.items():
        e = storage_error(OSError(code, "os text", "/data/objaverse.zarr/rgb/c/0"), out)
        assert isinstance(e, kind) and text in str(e) and "\n" not in str(e) and "run the same command" in str(e)
    assert storage_error(OSError(errno.ENOENT, "gone"), out) is None
    assert storage_error(ValueError("shard index checksum mismatch"), out) is None
    own = NoSpaceLeft("the bucket's quota is exceeded (s3://b/p)")
    assert storage_error(own, out) is own and isinstance(own, StorageError)  # the storage layer's own, as it is
