"""Django's Redis cache backend, keeping one redis client per connection pool.

The stock backend builds a new redis.Redis object for every operation; with redis-py 8 that
costs about 170 µs, more than the round trip to Redis, and the flag-set endpoint makes two
cache reads per request. A client over a pool is thread-safe, so one per pool is enough."""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}
        self._lock = threading.Lock()

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # The pool helpers are the stock client's own, private and so not in its type stubs.
        stock: Any = self
        index = stock._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            with self._lock:
                client = self._clients.get(index)
                if client is None:
                    pool = stock._get_connection_pool(write)
                    client = self._clients[index] = stock._client(connection_pool=pool)
        return client


class ReusedClientRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
