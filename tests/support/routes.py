"""The routes a worker serves, read from its aiohttp router (not a hand list), so a route added
anywhere (streams/web/*, a Faust blueprint) is covered by the security tests at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from meterguard.streams.runtime.app import create_app
from meterguard.streams.settings import Settings

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"\{([^}:]+)(:[^}]*)?\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp's canonical form: /api/throttles/{identity}/release

    def url(self, base: str, value: str | bytes = "svc-route") -> str:
        """The route's URL with every path parameter set to `value`, percent-encoded (bytes:
        as they are, so a parameter can be bytes that are not UTF-8)."""
        return base + _PARAM.sub(lambda _: quote(value, safe=""), self.path)


def served_routes(settings: Settings) -> list[Route]:
    """Every (method, path) the worker with these settings serves, as its web server builds
    them (Faust's `init_server`: our views, then the enabled Faust blueprints)."""
    app = create_app(settings)
    app.web.init_server()
    routes = {Route(r.method, r.resource.canonical) for r in app.web.web_app.router.routes()}
    return sorted(routes, key=lambda r: (r.path, r.method))
