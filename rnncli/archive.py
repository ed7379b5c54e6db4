"""Bounded reading of the uncompressed ``.npz`` archives rnncli writes, from untrusted files.

Nothing is inflated or unpickled. Every member must be stored (the writer never compresses),
the stored sizes must add up to no more than the file, and each ``.npy`` header is parsed so the
caller can check its dtype and shape before any data is read: reading needs memory of the order
of the arrays the caller accepted, whatever the file claims about itself.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
from typing import BinaryIO

import numpy as np

from .errors import ArchiveError
from .untrusted import clip, short

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_NPY_HEADER_LIMIT = 10_000  # numpy's own bound on a .npy header's length
_CHUNK = 1 << 20  # bytes copied per read, so no second full-size buffer is needed
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError)


class Archive:
    """The ``.npy`` members of the stored ``.npz`` open in ``f``, by key (name without ``.npy``)."""

    def __init__(self, f: BinaryIO, size: int):
        if f.read(4) not in _ZIP_MAGICS:
            raise ArchiveError("not an rnncli checkpoint (not an .npz archive)")
        f.seek(0)
        try:
            self._zip = zipfile.ZipFile(f)
        except _ZIP_ERRORS as e:
            raise ArchiveError(f"truncated or corrupt checkpoint ({clip(str(e))})") from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            self.members[_check_info(info, self.members)] = info
        stored = sum(info.file_size for info in self.members.values())
        if stored > size:  # overlapping members would let a small file name gigabytes of data
            raise ArchiveError(f"members claim {stored:,} bytes, more than the file's {size:,}")
        self._headers: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}

    def header(self, key: str) -> tuple[np.dtype, tuple[int, ...]]:
        """The dtype and shape that member ``key``'s ``.npy`` header declares, after checking
        that they account for exactly the member's stored size."""
        if key not in self._headers:
            self._headers[key] = self._read_header(key)
        dtype, shape, _ = self._headers[key]
        return dtype, shape

    def array(self, key: str) -> np.ndarray:
        """Member ``key``'s data as a writable array; check ``header(key)`` first."""
        dtype, shape, offset = self._headers[key]
        out = np.empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        try:
            with self._zip.open(self.members[key]) as f:
                f.read(offset)
                done = 0
                while done < len(view):
                    n = f.readinto(view[done : done + _CHUNK])
                    if not n:
                        raise ArchiveError(f"member {key!r}: truncated")
                    done += n
                f.read(1)  # reaching the end checks the member's CRC
        except _ZIP_ERRORS as e:
            raise ArchiveError(f"member {key!r}: cannot read ({clip(str(e))})") from None
        return out

    def _read_header(self, key: str) -> tuple[np.dtype, tuple[int, ...], int]:
        info = self.members[key]
        fmt = np.lib.format
        try:
            with self._zip.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(f, _NPY_HEADER_LIMIT)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(f, _NPY_HEADER_LIMIT)
                else:
                    raise ArchiveError(f"member {key!r}: unsupported .npy version {version}")
                offset = f.tell()
        except ArchiveError:
            raise
        except zipfile.BadZipFile as e:  # a bad CRC shows here when the member is small
            raise ArchiveError(f"member {key!r}: cannot read ({clip(str(e))})") from None
        except (*_ZIP_ERRORS, TypeError, SyntaxError, RecursionError, tokenize.TokenError) as e:
            # numpy parses the header's Python literal; any of these means it is not one
            raise ArchiveError(f"member {key!r}: not a .npy array ({clip(str(e))})") from None
        if dtype.hasobject:
            raise ArchiveError(f"member {key!r}: holds Python objects (a pickle); refused")
        if fortran or dtype.fields is not None or dtype.subdtype is not None:
            raise ArchiveError(f"member {key!r}: not a plain C-order array ({dtype})")
        if any(n < 0 for n in shape):
            raise ArchiveError(f"member {key!r}: negative dimension in shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise ArchiveError(
                f"member {key!r}: its header declares {dtype} {short(shape, 80)} "
                f"({nbytes:,} bytes) but it stores {info.file_size - offset:,} bytes of data"
            )
        return dtype, shape, offset


def _check_info(info: zipfile.ZipInfo, seen: dict) -> str:
    """The key of a member that may be read: a stored, unencrypted ``.npy`` seen once."""
    name = info.filename
    if not name.endswith(".npy"):
        raise ArchiveError(f"member {short(name)}: not a .npy array")
    key = name.removesuffix(".npy")
    if key in seen:
        raise ArchiveError(f"member {short(key)} appears twice")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ArchiveError(
            f"member {short(key)} is compressed; rnncli writes stored members and does not inflate"
        )
    if info.flag_bits & 0x1:
        raise ArchiveError(f"member {short(key)} is encrypted")
    return key
