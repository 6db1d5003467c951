"""Open a data file for streaming, decompressing gzip or a single-member zip on the fly."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path
from typing import IO

__all__ = ["Opened"]


class Opened:
    """A file opened for streaming: ``raw`` (on disk, for progress) and ``stream`` (decompressed)."""

    def __init__(self, path: Path, compression: str | None, member: str | None) -> None:
        self.raw = path.open("rb")
        self._zip: zipfile.ZipFile | None = None
        try:
            if compression == "gzip":
                self.stream: IO[bytes] = io.BufferedReader(gzip.GzipFile(fileobj=self.raw, mode="rb"), 1 << 20)
            elif compression == "zip":
                self._zip = zipfile.ZipFile(self.raw)
                self.stream = self._zip.open(member or self._zip.namelist()[0])
            else:
                self.stream = self.raw
        except BaseException:
            self.raw.close()
            raise

    def tell(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        if self._zip is not None:
            self._zip.close()
        self.raw.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
