"""The routing page (GET /ui): one HTML file with a little JS, served from the package; no build step, no CDN.

It sits behind the same auth as the API. A browser cannot send a Bearer header when it opens a page, so a
refused page asks for HTTP Basic auth (any user name, the API key as password); the browser then sends the
same credentials with the page's own calls to /v1/route and /v1/router.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..core.exchange import Exchange
from ..errors import GatewayError, Unauthorized

__all__ = ["PageCodec", "RoutingPage"]

CHALLENGE = 'Basic realm="routestack gateway", charset="UTF-8"'


class PageCodec:
    """A refusal of a page: plain text a person reads, and on 401 the challenge that makes a browser ask for the key."""

    def refusal(self, error: GatewayError, x: Exchange) -> Response:
        headers = x.id_headers()
        message = str(error)
        if isinstance(error, Unauthorized):
            headers["www-authenticate"] = CHALLENGE
            message += "; in a browser: any user name, the API key as password"
        return PlainTextResponse(message + "\n", error.http_status, headers)


class RoutingPage:
    """The page's bytes, read once from the package."""

    def __init__(self) -> None:
        self._html = files("gateway_service.ui").joinpath("routing.html").read_bytes()
        # Its one script may run, and no other (an injected one would not match the hash).
        scripts = re.findall(rb"<script>(.*?)</script>", self._html, re.DOTALL)
        allowed = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts)
        self._headers = {
            "cache-control": "no-store",
            # everything it needs is in the file and this origin: nothing may load from anywhere else
            "content-security-policy": f"default-src 'none'; script-src {allowed}; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "x-content-type-options": "nosniff",
        }

    async def page(self, request: Request, x: Exchange) -> Response:
        return Response(self._html, media_type="text/html; charset=utf-8", headers=x.id_headers() | self._headers)
