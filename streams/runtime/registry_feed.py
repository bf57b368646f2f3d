"""The identity registry served over HTTP (MG_REGISTRY_URL): fetched at start and every
MG_REGISTRY_REFRESH_S, for a CMDB or service catalogue that already knows who owns each key.

The body is JSON or YAML (the file format of streams/policy/registry.py) or CSV (by
`Content-Type: text/csv` or a `.csv` URL). A failed or invalid fetch keeps the registry the
worker has (logged; the first fetch falls back to MG_REGISTRY_FILE or none): attribution
never stops on the catalogue's outage.
"""

from __future__ import annotations

import logging

import httpx

from meterguard.streams.policy.registry import Registry, parse

log = logging.getLogger("meterguard.registry")
FETCH_TIMEOUT_S = 10.0


async def fetch_registry(url: str, client: httpx.AsyncClient | None = None) -> Registry:
    """The registry at `url`; ValueError says what is wrong with the answer."""
    own = client is None
    http = client or httpx.AsyncClient(timeout=FETCH_TIMEOUT_S)
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot fetch registry {url}: {exc!r}") from exc
    finally:
        if own:
            await http.aclose()
    if response.status_code != 200:
        raise ValueError(f"cannot fetch registry {url}: HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    csv_format = content_type == "text/csv" or url.lower().split("?")[0].endswith(".csv")
    return parse(response.text, url, csv_format)


async def refreshed(url: str, current: Registry) -> Registry:
    """The registry at `url`, or `current` when the fetch fails (logged)."""
    try:
        registry = await fetch_registry(url)
    except ValueError as exc:
        log.warning("%s; keeping the registry of %d identities", exc, len(current.identities))
        return current
    return registry
