"""A bounded set of the keys added last: what a process remembers of facts about stored
items that, once true, stay true (an execution finished, a site first stored by this
process), so that what it remembers is never stale. It only saves requests: a key
forgotten (the oldest go first) or never seen by this process (another Lambda's) costs the
read it saves. Everything remembered goes with the tables (``forget_all``, called when
they are deleted or the models point at another store).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

_ALL: weakref.WeakSet[RecentKeys] = weakref.WeakSet()


def forget_all() -> None:
    for keys in list(_ALL):
        keys.clear()


class RecentKeys:
    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        _ALL.add(self)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
