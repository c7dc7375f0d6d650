"""Where ``clambot mcp`` listens: stdio, or streamable HTTP on an address it checks.

HTTP rules (what a user can rely on):

* The default address is 127.0.0.1. Any address that is not loopback (``0.0.0.0``, a
  LAN address, a host name other than ``localhost``) must be asked for explicitly, and
  then a bearer token is required, unless that too is waived explicitly.
* With a token, every HTTP request must carry ``Authorization: Bearer <token>``; the
  comparison takes the same time whatever the token sent (`hmac.compare_digest`). A
  request without it gets 401 before it reaches the MCP server.
* On loopback, the SDK's DNS-rebinding protection is on (the Host and Origin headers
  must name a loopback address), so a web page cannot reach the server through a
  browser.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._errors import ConfigError

__all__ = [
    "MIN_TOKEN_CHARS",
    "BearerGate",
    "check_exposure",
    "is_loopback",
    "parse_listen",
    "read_token",
    "serve_http",
    "serve_stdio",
]

#: a shorter bearer token is refused: it could be guessed
MIN_TOKEN_CHARS = 16
#: how long a shutdown waits for open streams before it closes them
_GRACEFUL_S = 3.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port); the host defaults to
    127.0.0.1 and port 0 picks a free one.

    Raises ConfigError for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535 or (sep and not host):
        raise ConfigError(f"--http takes PORT or HOST:PORT (e.g. 127.0.0.1:8765), not {text!r}")
    return host or "127.0.0.1", number


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or ``localhost``): reachable only from
    this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def read_token(env: str) -> str:
    """The bearer token in the environment variable `env`.

    Raises ConfigError if it is not set or too short to be safe."""
    token = os.environ.get(env)
    if token is None:
        raise ConfigError(f"the environment variable {env} (the bearer token) is not set")
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the bearer token in {env} has {len(token)} characters; use at least "
            f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not token.isprintable() or " " in token:
        raise ConfigError(f"the bearer token in {env} must be one word of printable characters")
    return token


def check_exposure(host: str, *, token: str | None, allow_remote: bool, no_token: bool) -> None:
    """Refuse to listen beyond loopback unless asked to (`allow_remote`), and there
    without a token unless that is waived too (`no_token`).

    Raises ConfigError saying which flag is missing."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(
            f"refusing to listen on {host}, which other machines can reach: pass "
            "--allow-remote to mean it (and --token-env NAME to require a bearer token)"
        )
    if token is None and not no_token:
        raise ConfigError(
            f"refusing to listen on {host} without a bearer token: pass --token-env NAME "
            "(the variable holding the token), or --insecure-no-token to serve anyone "
            "who can reach it"
        )


class BearerGate:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode("utf-8")

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        # always compare, so the time taken does not depend on what was sent
        same = hmac.compare_digest(credential.strip(), self._token)
        return same and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self._app(scope, receive, send)
            return
        body = b'{"error":"unauthorized","error_description":"a bearer token is required"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="clambot"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening. Raises ConfigError if it cannot be."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def serve_http(
    server: Any, *, host: str, port: int, token: str | None, on_listening: Callable[[str], None]
) -> None:
    """Serve `server` (the SDK's low-level Server) over streamable HTTP at
    ``http://host:port/mcp`` until SIGINT or SIGTERM (then it shuts down gracefully,
    and the signal's own handler runs); `on_listening` gets the URL once the server is
    up. The address must have passed `check_exposure`.

    Raises ConfigError if the address cannot be bound."""
    import asyncio

    import uvicorn

    app: ASGIApp = server.streamable_http_app(host=host)
    if token is not None:
        app = BearerGate(app, token)
    sock = _listening_socket(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=int(_GRACEFUL_S),
    )
    web = uvicorn.Server(config)

    async def announce() -> None:
        while not web.started:  # up, and handling signals: now say where it is
            await asyncio.sleep(0.01)
        on_listening(f"http://{shown}:{bound[1]}/mcp")

    # a plain task, not a task group: a signal's handler may raise out of serve()
    # after the graceful shutdown, and must reach the caller as it is
    announcing = asyncio.get_running_loop().create_task(announce())
    try:
        await web.serve(sockets=[sock])
    finally:
        announcing.cancel()
        sock.close()


async def serve_stdio(server: Any) -> None:
    """Serve `server` over this process's stdin and stdout until stdin closes."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
