"""What a file that is not text looks like, from its first bytes: so that an executable or an
archive given as a corpus is called binary, not sent to try another encoding."""

from __future__ import annotations

HEAD_BYTES = 512  # bytes of a file's start that ``binary_kind`` looks at (tar's mark is at 257)

# Magic numbers: (offset, bytes, what the file is), the first match wins.
MAGIC = (
    (0, b"\x7fELF", "an ELF executable or library"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
    (0, b"PK\x03\x04", "a zip archive (or .npz, .docx, .jar)"),
    (0, b"PK\x05\x06", "an empty zip archive"),
    (0, b"BZh", "bzip2-compressed data"),
    (0, b"\xfd7zXZ\x00", "xz-compressed data"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (257, b"ustar", "a tar archive"),
    (0, b"%PDF-", "a PDF document"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"\x93NUMPY", "a numpy .npy array"),
    (0, b"SQLite format 3\x00", "an SQLite database"),
    (0, b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (0, b"\xca\xfe\xba\xbe", "a Mach-O universal binary or Java class file"),
    (0, b"\x00asm", "a WebAssembly module"),
    (0, b"MZ", "a Windows executable"),
)

NUL_BYTES = "binary data with NUL bytes"  # what binary_kind says of other binary data

# Byte-order marks of the wide encodings, whose text is full of NUL bytes in UTF-8's eyes.
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def binary_kind(head: bytes) -> str | None:
    """What the file starting with ``head`` (its first ``HEAD_BYTES`` bytes, or all of a shorter
    file) looks like if it is binary, in a few words: a known magic number, else ``NUL_BYTES``
    when ``head`` holds a NUL byte; None for what may be text, a UTF-16 or UTF-32
    file with its byte-order mark included (``wide_encoding`` names it)."""
    if wide_encoding(head):
        return None
    for offset, magic, kind in MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if magic == b"MZ" and b"\x00" not in head:  # "MZ" may begin a line of text
                continue
            return kind
    return NUL_BYTES if b"\x00" in head else None


def wide_encoding(head: bytes) -> str | None:
    """The wide encoding, utf-16 or utf-32, whose byte-order mark ``head`` starts with; None
    when it starts with neither."""
    for bom, name in WIDE_BOMS:
        if head.startswith(bom):
            return name
    return None
