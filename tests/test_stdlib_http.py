"""stdlib.http against real HTTP(S) servers on 127.0.0.1 started here; no other traffic.

Two plain servers and two TLS servers (certificates from a test CA made by trustme)
stand for hosts (the allow-list and secrets are per host:port). Every request they get
is recorded, so tests can check what actually went over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import gzip
import html
import ipaddress
import json
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlsplit

import httpx
import pytest
import trustme

from clambot_tools import CallContext, ConfigError, Limits, RunResult, Sandbox
from clambot_tools._context import enter_call, leave_call
from clambot_tools.stdlib import ToolError
from clambot_tools.stdlib import http as http_tools

SECRET = "sk-test-7f3a9c1e5b"
SEEN: list[dict[str, Any]] = []  # every request the servers got: port, path, headers
#: set when a test ends, so that a handler still waiting on a client gives up
RELEASE = threading.Event()
#: times at which /hang saw its client go away
HANGUPS: list[float] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle(b"")

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()

    def do_POST(self) -> None:
        self._handle(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        port = int(self.server.server_address[1])
        SEEN.append(
            {
                "port": port,
                "path": url.path,
                "method": self.command,
                "headers": dict(self.headers.items()),
            }
        )
        route = getattr(self, "_route_" + url.path.strip("/"), None)  # /hello: _route_hello
        if route is None:
            self._reply(404, b"not found", "text/plain")
        else:
            route(query, body)

    def _route_hello(self, query: dict[str, str], body: bytes) -> None:
        self._reply(200, b"hello world", "text/plain; charset=utf-8")

    def _route_headers(self, query: dict[str, str], body: bytes) -> None:
        # echoes the request headers, secrets included
        self._reply(200, json.dumps(dict(self.headers.items())).encode(), "application/json")

    def _route_echo(self, query: dict[str, str], body: bytes) -> None:
        self._reply(
            201,
            json.dumps(
                {
                    "method": self.command,
                    "body": body.decode(),
                    "type": self.headers.get("Content-Type"),
                }
            ).encode(),
            "application/json",
        )

    def _route_redirect(self, query: dict[str, str], body: bytes) -> None:
        self.send_response(int(query.get("status", "302")))
        self.send_header("Location", query["to"])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route_reflect(self, query: dict[str, str], body: bytes) -> None:
        # a careless server: the key ends up in a URL
        self.send_response(302)
        self.send_header("Location", f"/reflect?k={self.headers.get('X-Api-Key')}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route_big(self, query: dict[str, str], body: bytes) -> None:
        self._reply(200, b"x" * int(query["n"]), "text/plain")

    def _route_stream(self, query: dict[str, str], body: bytes) -> None:
        # no Content-Length: only reading can find the size
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(int(query["chunks"])):
            self.wfile.write(b"y" * 1000)
        self.close_connection = True

    def _route_bomb(self, query: dict[str, str], body: bytes) -> None:
        self.send_response(200)
        payload = gzip.compress(b"\0" * (8 << 20))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route_gzip(self, query: dict[str, str], body: bytes) -> None:
        payload = gzip.compress(b"zipped text")
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route_slow(self, query: dict[str, str], body: bytes) -> None:
        time.sleep(1.0)
        self._reply(200, b"late", "text/plain")

    def _route_hang(self, query: dict[str, str], body: bytes) -> None:
        # never answers; notes when the client hangs up
        while not RELEASE.is_set():
            if select.select([self.connection], [], [], 0.05)[0]:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    HANGUPS.append(time.monotonic())
                    break
        self.close_connection = True

    def _route_encoded(self, query: dict[str, str], body: bytes) -> None:
        # echoes the X-Api-Key header in the form asked for
        key = self.headers.get("X-Api-Key", "")
        forms = {
            "plain": key,
            "upper": key.upper(),
            "percent": quote(key, safe=""),
            "percent-lower": quote(key, safe="").lower(),
            "query": f"token={quote(key)}&x=1",
            "base64": base64.b64encode(f"user:{key}".encode()).decode(),
            "base64-offset": base64.b64encode(f"ab{key}cd".encode()).decode(),
            "base64url": base64.urlsafe_b64encode(f"k={key}".encode()).decode(),
            "hex": key.encode().hex(),
            "json": json.dumps({"key": key}),
            "json-escaped": "".join(f"\\u{ord(c):04x}" for c in key),
            "js-escaped": "".join(f"\\x{ord(c):02X}" for c in key),
            "html": html.escape(key),
            "html-decimal": "".join(f"&#{ord(c)};" for c in key),
            "html-hex": "".join(f"&#x{ord(c):x};" for c in key),
            "mixed": "".join(
                c if i % 3 == 0 else f"%{ord(c):02x}" if i % 3 == 1 else f"&#{ord(c)};"
                for i, c in enumerate(key)
            ),
        }
        self._reply(200, forms[query["form"]].encode(), "text/plain; charset=utf-8")

    def _route_charset(self, query: dict[str, str], body: bytes) -> None:
        # a server that names a charset Python decodes slowly
        self._reply(200, b"abc" * 100_000, f"text/plain; charset={query['name']}")

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except ConnectionError:  # the client gave up (the timeout test)
            self.close_connection = True


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    servers = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        srv.block_on_close = False
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers[0].server_address[1], servers[1].server_address[1]
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class TLSServer(ThreadingHTTPServer):
    """The same handler behind TLS; the handshake happens in the request's thread."""

    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls_request = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(tls_request, client_address)
        finally:
            # the TLS socket took over the connection: the server closes only the plain one
            self.shutdown_request(tls_request)


@pytest.fixture(scope="module")
def tls() -> Iterator[tuple[int, int, ssl.SSLContext]]:
    """Two HTTPS servers on 127.0.0.1 and a client context that trusts their CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "api.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    servers = []
    for _ in range(2):
        srv = TLSServer(("127.0.0.1", 0), Handler)
        srv.context = server_ctx
        srv.daemon_threads = True
        srv.block_on_close = False
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers[0].server_address[1], servers[1].server_address[1], client_ctx
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def _clear_seen() -> Iterator[None]:
    SEEN.clear()
    HANGUPS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


def sandbox(**kwargs: Any) -> Sandbox:
    return Sandbox(bindings=http_tools.bindings(**kwargs), limits=Limits(timeout_s=5))


def fetch(sb: Sandbox, **args: Any) -> RunResult:
    return sb.run(f"await tools.http_fetch({json.dumps(args)})")


def failure(res: RunResult) -> str:
    assert res.error is not None, res
    assert res.error.kind == "binding_failed", res.error
    assert SECRET not in res.error.message
    return res.error.message


def test_fetch_returns_status_headers_and_text(ports: tuple[int, int]) -> None:
    a, _ = ports
    sb = sandbox(allow_hosts=[f"127.0.0.1:{a}"])
    res = fetch(sb, url=f"http://127.0.0.1:{a}/hello")
    assert res.value["status"] == 200 and res.value["text"] == "hello world"
    assert res.value["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert res.value["url"] == f"http://127.0.0.1:{a}/hello"
    assert fetch(sb, url=f"http://127.0.0.1:{a}/nope").value["status"] == 404
    assert fetch(sb, url=f"http://127.0.0.1:{a}/gzip").value["text"] == "zipped text"
    res = fetch(sb, url=f"http://127.0.0.1:{a}/echo", method="post", body={"k": [1, 2]})
    assert res.value["status"] == 201
    assert json.loads(res.value["text"]) == {
        "method": "POST",
        "body": '{"k": [1, 2]}',
        "type": "application/json",
    }
    assert [b.effects for b in http_tools.bindings(allow_hosts=["x.test"])] == [("network",)]


def test_hosts_outside_the_allow_list_are_refused(ports: tuple[int, int]) -> None:
    a, b = ports
    sb = sandbox(allow_hosts=[f"127.0.0.1:{a}"])
    assert "not in the list of allowed hosts" in failure(fetch(sb, url="http://example.com/"))
    assert "not in the list of allowed hosts" in failure(
        fetch(sb, url=f"http://127.0.0.1:{b}/hello")
    )  # another port is another host
    assert "only http and https" in failure(fetch(sb, url="file:///etc/passwd"))
    assert "credentials in the URL" in failure(fetch(sb, url=f"http://user:pw@127.0.0.1:{a}/hello"))
    assert SEEN == []


def test_loopback_needs_an_explicit_allow(ports: tuple[int, int]) -> None:
    a, _ = ports
    by_name = sandbox(allow_hosts=[f"localhost:{a}"])
    msg = failure(fetch(by_name, url=f"http://localhost:{a}/hello"))
    assert "resolves to a private, loopback or reserved address" in msg
    assert SEEN == []
    trusting = sandbox(allow_hosts=[f"localhost:{a}"], allow_private=True)
    assert fetch(trusting, url=f"http://localhost:{a}/hello").value["text"] == "hello world"
    assert SEEN[-1]["headers"]["Host"] == f"localhost:{a}"


def test_every_resolved_address_is_checked_and_the_checked_one_is_used(
    ports: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = ports
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []
    answers = {"svc.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "127.0.0.1"]}

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
            for ip in answers[host]
        ]

    real_send = httpx.AsyncClient.send

    async def loopback_only_send(
        self: httpx.AsyncClient, request: httpx.Request, **kw: Any
    ) -> httpx.Response:
        assert request.url.host == "127.0.0.1", "a request left 127.0.0.1"
        return await real_send(self, request, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(httpx.AsyncClient, "send", loopback_only_send)
    # one public and one loopback answer: refused before any connection is made
    strict = sandbox(allow_hosts=["mixed.test"])
    assert "private, loopback or reserved" in failure(
        fetch(strict, url=f"http://mixed.test:{a}/hello")
    )
    # the name resolves only through our lookup: httpx connects to the checked IP, and
    # the request still carries the host name
    trusting = sandbox(allow_hosts=[f"svc.test:{a}"], allow_private=True)
    res = fetch(trusting, url=f"http://svc.test:{a}/hello")
    assert res.value["text"] == "hello world" and res.value["url"] == f"http://svc.test:{a}/hello"
    assert SEEN[-1]["headers"]["Host"] == f"svc.test:{a}"
    assert lookups == ["mixed.test", "svc.test"]


def test_https_keeps_host_header_and_sni_on_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """What goes to httpx: the checked IP in the URL, the name in Host and SNI (no TLS
    server here, so the send is intercepted)."""
    sent: list[httpx.Request] = []

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        assert host == "api.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 443))]

    async def fake_send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        sent.append(request)
        raise httpx.ConnectError("refused by the test", request=request)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(httpx.AsyncClient, "send", fake_send)
    sb = sandbox(
        allow_hosts=["api.test"],
        allow_private=True,
        secrets={"api.test": {"Authorization": f"Bearer {SECRET}"}},
    )
    msg = failure(fetch(sb, url="https://api.test/v1?q=1"))
    assert "could not connect to api.test" in msg
    (request,) = sent
    assert str(request.url) == "https://127.0.0.1/v1?q=1"
    assert request.headers["host"] == "api.test"
    assert request.extensions["sni_hostname"] == "api.test"
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_redirects_are_followed_only_to_allowed_hosts(ports: tuple[int, int]) -> None:
    a, b = ports
    sb = sandbox(allow_hosts=[f"127.0.0.1:{a}"], max_redirects=3)
    res = fetch(sb, url=f"http://127.0.0.1:{a}/redirect?to=/hello")
    assert res.value["text"] == "hello world" and res.value["url"].endswith("/hello")
    SEEN.clear()
    msg = failure(fetch(sb, url=f"http://127.0.0.1:{a}/redirect?to=http://127.0.0.1:{b}/hello"))
    assert f"127.0.0.1:{b} is not in the list of allowed hosts" in msg
    assert [s["port"] for s in SEEN] == [a]  # b was never contacted
    msg = failure(fetch(sb, url=f"http://127.0.0.1:{a}/redirect?to=http://169.254.169.254/"))
    assert "not in the list" in msg
    loop = "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect%25253Fto%25253D/hello"
    assert "more than 3 redirects" in failure(fetch(sb, url=f"http://127.0.0.1:{a}{loop}"))
    # the address check applies to every hop, not just the first
    named = sandbox(allow_hosts=[f"127.0.0.1:{a}", f"localhost:{a}"])
    msg = failure(fetch(named, url=f"http://127.0.0.1:{a}/redirect?to=http://localhost:{a}/"))
    assert "private, loopback or reserved" in msg
    # 303 turns a POST into a GET without its body
    res = fetch(
        sb, url=f"http://127.0.0.1:{a}/redirect?status=303&to=/echo", method="POST", body="payload"
    )
    assert json.loads(res.value["text"])["method"] == "GET" and SEEN[-1]["method"] == "GET"


def test_response_size_cap_while_streaming(ports: tuple[int, int]) -> None:
    a, _ = ports
    sb = sandbox(allow_hosts=[f"127.0.0.1:{a}"], max_response_bytes=5000)
    assert len(fetch(sb, url=f"http://127.0.0.1:{a}/big?n=5000").value["text"]) == 5000
    assert "larger than the 5000-byte limit" in failure(
        fetch(sb, url=f"http://127.0.0.1:{a}/big?n=5001")
    )
    assert len(fetch(sb, url=f"http://127.0.0.1:{a}/stream?chunks=5").value["text"]) == 5000
    assert "larger than the 5000-byte limit" in failure(
        fetch(sb, url=f"http://127.0.0.1:{a}/stream?chunks=50")
    )
    head = fetch(sb, url=f"http://127.0.0.1:{a}/big", method="HEAD").value
    assert head["status"] == 200 and head["text"] == ""  # no body, whatever its length says
    assert "larger than the 5000-byte limit" in failure(  # 8 MiB of zeros, gzipped
        fetch(sb, url=f"http://127.0.0.1:{a}/bomb")
    )


def test_timeout(ports: tuple[int, int]) -> None:
    a, _ = ports
    sb = sandbox(allow_hosts=[f"127.0.0.1:{a}"], timeout_s=0.3)
    t0 = time.monotonic()
    msg = failure(fetch(sb, url=f"http://127.0.0.1:{a}/slow"))
    assert "took longer than 0.3 s" in msg
    assert time.monotonic() - t0 < 0.9


def test_secrets_are_sent_but_never_seen_nor_overridden(
    tls: tuple[int, int, ssl.SSLContext],
) -> None:
    a, b, verify = tls
    sb = sandbox(
        allow_hosts=[f"127.0.0.1:{a}", f"127.0.0.1:{b}"],
        secrets={f"127.0.0.1:{a}": {"X-Api-Key": SECRET}},
        verify=verify,
    )
    res = fetch(
        sb,
        url=f"https://127.0.0.1:{a}/headers",
        headers={"x-api-key": "from-the-script", "X-Other": "kept"},
    )
    # the server got the host's secret, not the script's value
    assert SEEN[-1]["headers"]["X-Api-Key"] == SECRET
    assert SEEN[-1]["headers"]["X-Other"] == "kept"
    assert "from-the-script" not in json.dumps(SEEN[-1]["headers"])
    # the server echoed it, but the script only sees it redacted
    echoed = json.loads(res.value["text"])
    assert echoed["X-Api-Key"] == "[redacted]"
    assert SECRET not in res.model_dump_json()
    # a host without secrets gets none
    SEEN.clear()
    fetch(sb, url=f"https://127.0.0.1:{b}/hello")
    assert "X-Api-Key" not in SEEN[-1]["headers"]


def test_secrets_and_credentials_are_dropped_on_a_cross_host_redirect(
    tls: tuple[int, int, ssl.SSLContext],
) -> None:
    a, b, verify = tls
    sb = sandbox(
        allow_hosts=[f"127.0.0.1:{a}", f"127.0.0.1:{b}"],
        secrets={f"127.0.0.1:{a}": {"Authorization": f"Bearer {SECRET}"}},
        verify=verify,
    )
    res = fetch(
        sb,
        url=f"https://127.0.0.1:{a}/redirect?status=307&to=https://127.0.0.1:{b}/hello",
        headers={"Cookie": "session=1", "X-Trace": "t"},
    )
    assert res.value["text"] == "hello world"
    first, second = SEEN
    assert first["port"] == a and first["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert second["port"] == b and "Authorization" not in second["headers"]
    assert "Cookie" not in second["headers"] and second["headers"]["X-Trace"] == "t"


def test_secrets_stay_out_of_error_messages(tls: tuple[int, int, ssl.SSLContext]) -> None:
    a, _, verify = tls
    sb = sandbox(
        allow_hosts=[f"127.0.0.1:{a}"],
        max_redirects=1,
        secrets={f"127.0.0.1:{a}": {"X-Api-Key": SECRET}},
        verify=verify,
    )
    # the server reflects the key into the redirect URL, which the error message shows
    msg = failure(fetch(sb, url=f"https://127.0.0.1:{a}/reflect"))
    assert f"more than 1 redirects; stopped at https://127.0.0.1:{a}/reflect?k=[redacted]" in msg
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    sb = sandbox(
        allow_hosts=[f"127.0.0.1:{dead}"], secrets={f"127.0.0.1:{dead}": {"X-Key": SECRET}}
    )
    assert "could not connect" in failure(fetch(sb, url=f"https://127.0.0.1:{dead}/"))


def test_managed_and_malformed_headers_are_refused(ports: tuple[int, int]) -> None:
    a, _ = ports
    sb = sandbox(allow_hosts=[f"127.0.0.1:{a}"])
    url = f"http://127.0.0.1:{a}/hello"
    assert "Host header is set by the host" in failure(
        fetch(sb, url=url, headers={"Host": "internal.example"})
    )
    assert "line break" in failure(fetch(sb, url=url, headers={"X-A": "a\r\nX-B: b"}))
    assert "method 'TRACE' is not allowed" in failure(fetch(sb, url=url, method="TRACE"))
    assert SEEN == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1::", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("64:ff9b::a9fe:a9fe", False),
        ("2002:7f00:1::", False),
        ("fec0::1", False),  # deprecated site-local (issue 11.11)
        ("feff:ffff::1", False),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert http_tools.is_public_address(ipaddress.ip_address(address)) is public


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="not one str"):
        http_tools.bindings(allow_hosts="api.example.com")
    with pytest.raises(ConfigError, match="not a URL"):
        http_tools.bindings(allow_hosts=["https://api.example.com/"])
    with pytest.raises(ConfigError, match="not in allow_hosts"):
        http_tools.bindings(allow_hosts=["a.test"], secrets={"b.test": {"X-Key": "k"}})
    explicit_80 = http_tools.bindings(allow_hosts=["127.0.0.1:80"])[0]
    res = Sandbox(bindings=[explicit_80]).run(
        "await tools.http_fetch({url: 'http://127.0.0.1:81/'})"
    )
    assert res.error is not None and "not in the list" in res.error.message
    with pytest.raises(ConfigError, match="empty"):
        http_tools.bindings(allow_hosts=[])


def test_importing_the_package_does_not_import_httpx() -> None:
    code = (
        "import sys, clambot_tools, clambot_tools.stdlib.http, clambot_tools.stdlib.files, "
        "clambot_tools.stdlib.sql; print('httpx' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# -- secrets only over HTTPS, redaction of encoded echoes, the run's deadline and end


def test_secrets_go_only_over_https_to_their_host_and_port(
    ports: tuple[int, int], tls: tuple[int, int, ssl.SSLContext]
) -> None:
    """Issue 11.9: a secret configured for a host was also sent over plain http:// and
    to any port of that host."""
    plain, _ = ports
    a, b, verify = tls
    # a key without a port means HTTPS on 443: neither plain http nor another port
    sb = sandbox(
        allow_hosts=["127.0.0.1"], secrets={"127.0.0.1": {"X-Api-Key": SECRET}}, verify=verify
    )
    assert fetch(sb, url=f"http://127.0.0.1:{plain}/headers").value["status"] == 200
    assert fetch(sb, url=f"https://127.0.0.1:{a}/headers").value["status"] == 200
    assert len(SEEN) == 2 and not any("X-Api-Key" in s["headers"] for s in SEEN)
    # a key with a port (here as a URL): that port, over HTTPS, and only that one
    SEEN.clear()
    sb = sandbox(
        allow_hosts=["127.0.0.1"],
        secrets={f"https://127.0.0.1:{a}": {"X-Api-Key": SECRET}},
        verify=verify,
    )
    fetch(sb, url=f"https://127.0.0.1:{b}/headers")
    fetch(sb, url=f"https://127.0.0.1:{a}/headers")
    assert [(s["port"], s["headers"].get("X-Api-Key")) for s in SEEN] == [(b, None), (a, SECRET)]
    # ...and not after a redirect from there to plain http on the same host
    SEEN.clear()
    fetch(sb, url=f"https://127.0.0.1:{a}/redirect?to=http://127.0.0.1:{plain}/hello")
    assert [(s["port"], s["headers"].get("X-Api-Key")) for s in SEEN] == [
        (a, SECRET),
        (plain, None),
    ]
    with pytest.raises(ConfigError, match="only over HTTPS"):
        http_tools.bindings(allow_hosts=["a.test"], secrets={"http://a.test": {"X-Key": "k"}})
    with pytest.raises(ConfigError, match="not in allow_hosts"):  # 443 is not allowed
        http_tools.bindings(allow_hosts=["a.test:8443"], secrets={"a.test": {"X-Key": "k"}})


#: a secret with characters that each encoding writes differently
TRICKY = 'sk/Te+st "7f<3a>&9c=1e'
FORMS = [
    "plain",
    "upper",
    "percent",
    "percent-lower",
    "query",
    "base64",
    "base64-offset",
    "base64url",
    "hex",
    "json",
    "json-escaped",
    "js-escaped",
    "html",
    "html-decimal",
    "html-hex",
    "mixed",
]


def recovers_tricky(text: str) -> bool:
    """Whether TRICKY can be read back from `text` by undoing a common encoding."""
    candidates = [text, unquote_plus(text), html.unescape(text), html.unescape(unquote(text))]
    decoders: list[Callable[[str], str]] = [
        lambda t: codecs.decode(t, "unicode_escape"),
        lambda t: bytes.fromhex(t).decode("latin-1"),
    ]
    for decode in decoders:
        try:
            candidates.append(decode(text))
        except ValueError:
            pass
    for alphabet in (text, text.translate(str.maketrans("-_", "+/"))):
        for skip in range(4):
            try:
                candidates.append(base64.b64decode(alphabet[skip:] + "==").decode("latin-1"))
            except ValueError:
                pass
    return any(TRICKY.lower() in c.lower() for c in candidates)


@pytest.mark.parametrize("form", FORMS)
def test_secrets_echoed_in_common_encodings_are_redacted(
    tls: tuple[int, int, ssl.SSLContext], form: str
) -> None:
    """Issue 11.9: redaction caught only the literal value; an API echoing the secret
    percent-encoded, base64, escaped or as HTML entities leaked it."""
    a, _, verify = tls
    sb = sandbox(
        allow_hosts=[f"127.0.0.1:{a}"],
        secrets={f"127.0.0.1:{a}": {"X-Api-Key": TRICKY}},
        verify=verify,
    )
    # what the server sends back does hold the secret, in this form
    raw = httpx.get(
        f"https://127.0.0.1:{a}/encoded?form={form}", headers={"X-Api-Key": TRICKY}, verify=verify
    ).text
    assert recovers_tricky(raw)
    text = fetch(sb, url=f"https://127.0.0.1:{a}/encoded?form={form}").value["text"]
    assert "[redacted]" in text and not recovers_tricky(text), text


def test_redaction_keeps_text_that_is_not_a_secret() -> None:
    fetcher = http_tools.bindings(
        allow_hosts=["api.test"],
        secrets={"api.test": {"Authorization": f"Bearer {SECRET}", "X-Other": TRICKY}},
    )[0].func.__self__  # type: ignore[attr-defined]
    text = "plain words: sk-test, 100%, &amp; \\u0041, s k/Te, QUJDREVGR0g= stay\n" * 1000
    assert fetcher.redact(text) == text
    assert fetcher.redact(f"auth: Bearer {SECRET}!") == "auth: [redacted]!"
    assert fetcher.redact(f"token={SECRET.upper()}") == "token=[redacted]"


def call_fetch(url: str, ctx: CallContext, timeout_s: float) -> str:
    """Call the fetch binding as the run driver does, serving the call `ctx`; the
    message of the ToolError it ends with."""
    host = urlsplit(url).netloc
    fetch_func = http_tools.bindings(allow_hosts=[host], timeout_s=timeout_s)[0].func

    async def serve() -> None:
        token = enter_call(ctx)
        try:
            await fetch_func(url=url)
        finally:
            leave_call(token)

    try:
        asyncio.run(serve())
    except ToolError as exc:
        return str(exc)
    raise AssertionError("the request returned")


def seconds_until(condition: Any, limit: float) -> float | None:
    """Seconds until `condition()` holds (checked every 5 ms), or None after `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if condition():
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def test_a_request_stops_at_the_deadline_of_the_call_it_serves(ports: tuple[int, int]) -> None:
    a, _ = ports
    t0 = time.monotonic()
    msg = call_fetch(f"http://127.0.0.1:{a}/hang", CallContext("http_fetch", t0 + 0.5), 20)
    assert "time limit was reached" in msg
    assert time.monotonic() - t0 < 10  # not the binding's own 20 s
    assert seconds_until(lambda: HANGUPS, 10) is not None  # the connection was closed


def test_ending_the_run_cancels_the_request(ports: tuple[int, int]) -> None:
    a, _ = ports
    ctx = CallContext("http_fetch", time.monotonic() + 120)
    ended: list[str] = []
    worker = threading.Thread(
        target=lambda: ended.append(call_fetch(f"http://127.0.0.1:{a}/hang", ctx, 20))
    )
    worker.start()
    assert seconds_until(lambda: SEEN, 30) is not None  # the request is at the server
    cancelled_at = time.monotonic()
    ctx.cancel()  # what the run driver does when the run ends
    worker.join(30)
    assert ended and "run ended" in ended[0]
    assert seconds_until(lambda: HANGUPS, 10) is not None
    assert HANGUPS[0] - cancelled_at < 5  # not the binding's own 20 s


def test_a_run_that_times_out_hangs_up_its_requests(ports: tuple[int, int]) -> None:
    a, _ = ports
    sb = Sandbox(
        bindings=http_tools.bindings(allow_hosts=[f"127.0.0.1:{a}"], timeout_s=60),
        limits=Limits(timeout_s=1),
    )
    res = fetch(sb, url=f"http://127.0.0.1:{a}/hang")
    returned_at = time.monotonic()
    assert res.error is not None and res.error.kind in ("timeout", "binding_failed")
    assert seconds_until(lambda: HANGUPS, 10) is not None
    assert HANGUPS[0] - returned_at < 5


def test_a_servers_charset_cannot_pick_a_slow_codec(ports: tuple[int, int]) -> None:
    """The charset comes from the server: 300 kB named 'punycode' took ~20 s to
    decode; only ordinary text encodings are used (else UTF-8)."""
    a, _ = ports
    sb = Sandbox(
        bindings=http_tools.bindings(allow_hosts=[f"127.0.0.1:{a}"], timeout_s=30),
        limits=Limits(timeout_s=10),
    )
    for name in ("punycode", "idna", "rot13", "zlib"):
        t0 = time.monotonic()
        res = fetch(sb, url=f"http://127.0.0.1:{a}/charset?name={name}")
        assert res.value["text"] == "abc" * 100_000, name
        assert time.monotonic() - t0 < 5
