"""Which adapters are resident: a cache bounded by bytes, least recently used out first.

Requests hold references to the adapters they use, so evicting one while a request runs only
drops it from the cache; it is freed when that request ends.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from viz.serving.engines.lora import LoadedAdapter

__all__ = ["AdapterSlots"]


class AdapterSlots:
    def __init__(self, bytes_max: int) -> None:
        self.bytes_max = bytes_max
        self._resident: OrderedDict[int, LoadedAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    @property
    def resident_bytes(self) -> int:
        return sum(a.size_bytes for a in self._resident.values())

    def get(self, version_id: int, load: Callable[[], LoadedAdapter]) -> LoadedAdapter:
        """The resident adapter, or `load()` it (hot-loading) and evict the least recent."""
        with self._lock:
            if version_id in self._resident:
                self._resident.move_to_end(version_id)
                return self._resident[version_id]
        adapter = load()
        with self._lock:
            self.loads += 1
            self._resident[version_id] = adapter
            self._resident.move_to_end(version_id)
            while self.resident_bytes > self.bytes_max and len(self._resident) > 1:
                self._resident.popitem(last=False)
                self.evictions += 1
        return adapter

    def resident(self) -> list[str]:
        with self._lock:
            return [a.label for a in self._resident.values()]
