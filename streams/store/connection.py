"""Every Redis client meterguard builds: one Redis or a Redis Cluster, over TLS, as an ACL user.

    redis_client(url, RedisOptions(...))   the worker, replay, reconcile, report, demo, bench
    check_redis(client, url)               one PING at start: a wrong password, user or CA is
                                           a one-line error (RedisRefused), never a secret

Standalone or Cluster is a setting (MG_REDIS_CLUSTER), not detected: detecting takes a round
trip before the first client exists (clients are built synchronously, in constructors), and a
deployment's topology is not something to guess per process. A standalone client pointed at a
cluster node is refused at start with a message naming the setting (`check_redis`).

Cluster: every key of one identity shares its `{identity}` hash tag (keys.py), every script
and MULTI-free pipeline touches one hash tag per command, SCAN visits every primary (redis-py's
cluster `scan_iter`), and a pipeline's EVALSHA commands find their scripts loaded on every
primary first (`_ScriptingCluster`), as redis-py's standalone pipelines already do. The
cluster client is typed as `aioredis.Redis`: it offers the same command methods for every
command meterguard sends (tests/integration/test_redis_cluster.py runs them on a real
cluster); meterguard never uses MULTI/WATCH, which a cluster pipeline could not span.

TLS: a `rediss://` URL, with MG_REDIS_TLS_CA_FILE (the server's CA; default: the system's) and
for mutual TLS MG_REDIS_TLS_CERT_FILE + MG_REDIS_TLS_KEY_FILE. ACL: `rediss://user:pass@...`
in the URL, or MG_REDIS_USERNAME / MG_REDIS_PASSWORD (the URL wins, as in redis-py). The
password is never part of a message: `redacted(url)` drops it from any URL shown.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterPipeline, RedisCluster


@dataclass(frozen=True)
class RedisOptions:
    """How to reach Redis, besides the URL (streams/settings.py: `Settings.redis_options`)."""

    cluster: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


class RedisRefused(RuntimeError):
    """Redis answered, but not as configured: authentication, TLS or topology. One line, no
    secret; retrying cannot help (unlike retry.REDIS_UNAVAILABLE)."""


def redis_client(url: str, options: RedisOptions = RedisOptions()) -> aioredis.Redis:
    """A client of `url` (redis:// or rediss://) with `options`; connects on first use."""
    kwargs: dict[str, Any] = {}
    if options.username:
        kwargs["username"] = options.username
    if options.password:
        kwargs["password"] = options.password
    tls_files = (options.tls_ca_file, options.tls_cert_file, options.tls_key_file)
    if any(tls_files):
        if urlsplit(url).scheme != "rediss":
            raise ValueError(
                f"MG_REDIS_TLS_* files are set but the Redis URL is not rediss:// ({redacted(url)})"
            )
        if bool(options.tls_cert_file) != bool(options.tls_key_file):
            raise ValueError("MG_REDIS_TLS_CERT_FILE and MG_REDIS_TLS_KEY_FILE go together")
        kwargs.update(
            ssl_ca_certs=options.tls_ca_file,
            ssl_certfile=options.tls_cert_file,
            ssl_keyfile=options.tls_key_file,
        )
    if options.cluster:
        return cast(aioredis.Redis, _ScriptingCluster.from_url(url, **kwargs))
    return aioredis.Redis.from_url(url, **kwargs)


def is_cluster(client: aioredis.Redis) -> bool:
    return isinstance(client, RedisCluster)


def redacted(url: str) -> str:
    """`url` without its password (user name and host kept): safe to log or print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def check_redis(client: aioredis.Redis, url: str) -> None:
    """PING, and a standalone client must not talk to a cluster node. Raises RedisRefused
    (authentication, TLS, topology: one line naming the settings) or lets retry's
    REDIS_UNAVAILABLE errors through (Redis not up yet: the caller may wait)."""
    where = redacted(url)
    try:
        await client.ping()
        if not is_cluster(client):
            info = await client.info("cluster")
            if int(info.get("cluster_enabled", 0)):
                raise RedisRefused(
                    f"Redis at {where} is a Redis Cluster node: set MG_REDIS_CLUSTER=true"
                )
    except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
        raise RedisRefused(
            f"Redis at {where} refused the credentials ({_first_line(exc)}): check the user "
            "and password (MG_REDIS_URL, MG_REDIS_USERNAME, MG_REDIS_PASSWORD)"
        ) from None
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise RedisRefused(
                f"Redis at {where} refused the credentials ({_first_line(exc)}): check "
                "MG_REDIS_URL, MG_REDIS_USERNAME, MG_REDIS_PASSWORD"
            ) from None
        raise
    except redis.exceptions.ConnectionError as exc:
        if _tls_failure(exc):
            raise RedisRefused(
                f"TLS to Redis at {where} failed ({_first_line(exc)}): check "
                "MG_REDIS_TLS_CA_FILE, MG_REDIS_TLS_CERT_FILE, MG_REDIS_TLS_KEY_FILE"
            ) from None
        raise


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


class _ScriptingCluster(RedisCluster):
    """RedisCluster whose pipelines load their scripts on every primary before an EVALSHA.

    redis-py's standalone pipeline checks SCRIPT EXISTS and loads what is missing before it
    sends; its cluster pipeline sends EVALSHA as is, so on a fresh cluster (or a primary that
    lost its script cache: a restart, a failover) a pipelined script failed with NOSCRIPT.
    Loaded scripts are remembered per client; a NOSCRIPT reply anyway (a new primary) loads
    them again and re-sends exactly the commands that failed: a NOSCRIPT command did not run.
    """

    def register_script(self, script: Any) -> Any:
        registered = super().register_script(script)
        self._known_scripts()[registered.sha] = registered.script
        return registered

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if transaction or shard_hint:
            raise redis.exceptions.RedisClusterException(
                "meterguard sends no MULTI on Redis Cluster (keys of several slots)"
            )
        return _ScriptingPipeline(self)  # type: ignore[abstract]  # as redis-py's own

    def _known_scripts(self) -> dict[str, Any]:
        known = self.__dict__.setdefault("_mg_scripts", {})
        return cast(dict[str, Any], known)

    def _loaded(self) -> set[str]:
        return cast(set[str], self.__dict__.setdefault("_mg_loaded", set()))

    async def load_scripts(self, shas: set[str], again: bool = False) -> None:
        """SCRIPT LOAD (sent to every primary) of each of `shas` not loaded yet."""
        loaded = self._loaded()
        if again:
            loaded.difference_update(shas)
        for sha in sorted(shas - loaded):
            script = self._known_scripts().get(sha)
            if script is not None:
                await self.script_load(script)
                loaded.add(sha)


class _ScriptingPipeline(ClusterPipeline):
    """A cluster pipeline (no transaction) that loads its scripts first (_ScriptingCluster)."""

    def __init__(self, client: _ScriptingCluster) -> None:
        super().__init__(client, transaction=False)
        self._mg_client = client
        self._mg_queue: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._mg_queue.append((args, kwargs))
        return super().execute_command(*args, **kwargs)

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        queued, self._mg_queue = self._mg_queue, []
        shas = {str(args[1]) for args, _ in queued if str(args[0]).upper() == "EVALSHA"}
        await self._mg_client.load_scripts(shas)
        replies = await super().execute(False, allow_redirections)
        failed = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if failed:
            await self._mg_client.load_scripts(shas, again=True)
            again = _ScriptingPipeline(self._mg_client)  # type: ignore[abstract]
            for i in failed:
                args, kwargs = queued[i]
                again.execute_command(*args, **kwargs)
            for i, reply in zip(failed, await again.execute(False), strict=True):
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies
