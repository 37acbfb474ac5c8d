"""The content cache: current file contents in memory, bounded in bytes, so a read needs
no query. Kept apart from the tree, which holds only names and attributes."""

from __future__ import annotations

import threading
from collections import OrderedDict

import zstandard


class ContentCache:
    """Least-recently-used file contents, keyed by (file id, version), bounded in the bytes
    it holds. A cold read from DuckDB costs milliseconds (a query per miss) where the
    floor's costs a few hundred microseconds, so the cache should hold every current file.
    When they would not fit as they are, it keeps them compressed (`compress`, set by the
    store's preload): Markdown compresses two to three times at zstd's level 1, which
    compresses four times faster than zlib's fastest level (the preload of 100,000 files
    waited on zlib) and decompresses a few KB in half zlib's time, a few tens of
    microseconds. Each entry says whether it is."""

    LEVEL = 1
    # zstd's (de)compressor objects are not thread-safe: one per thread.
    _zstd = threading.local()

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.compress = False
        self._data: OrderedDict[tuple[int, int], tuple[bytes, bool]] = OrderedDict()

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._data

    def get(self, key: tuple[int, int], touch: bool = True) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if touch:
            self._data.move_to_end(key)
        payload, packed = entry
        return self._codec()[1].decompress(payload) if packed else payload

    def pack(self, data: bytes) -> tuple[bytes, bool]:
        """What `put_packed` takes: zstd releases the GIL, so a worker thread can do it."""
        if not self.compress:
            return data, False
        # A copy: zstd's own result sits in a block of the size it might have needed, and
        # kept as is, the cache would hold twice its bytes.
        return bytes(memoryview(self._codec()[0].compress(data))), True

    @classmethod
    def _codec(cls) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        codec = getattr(cls._zstd, "codec", None)
        if codec is None:
            codec = cls._zstd.codec = (zstandard.ZstdCompressor(level=cls.LEVEL),
                                       zstandard.ZstdDecompressor())
        return codec

    def put(self, key: tuple[int, int], data: bytes) -> None:
        self.put_packed(key, self.pack(data))

    def put_packed(self, key: tuple[int, int], entry: tuple[bytes, bool]) -> None:
        size = len(entry[0])
        if size > self.max_bytes // 4:
            return  # one huge file must not flush the whole cache
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= len(old[0])
        self._data[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._data.popitem(last=False)
            self.bytes -= len(evicted[0])

    def full(self) -> bool:
        """Whether another file would evict one (a preload stops there)."""
        return self.bytes >= self.max_bytes - self.max_bytes // 64

    def forget(self, key: tuple[int, int]) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0])
