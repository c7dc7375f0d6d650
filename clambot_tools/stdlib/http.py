"""An HTTP binding limited to an allow-list of hosts, safe from SSRF and DNS rebinding.

``bindings(allow_hosts=[...])`` grants ``http_fetch``. For each request, and again for
each redirect (followed here, by hand, never by httpx):

1. the URL must be ``http`` or ``https``, without credentials, on a host of the
   allow-list (exact host name, optionally with a port);
2. the host is resolved here and *every* address it resolves to is checked: private,
   loopback, link-local, multicast, reserved and unspecified addresses (also when
   embedded in IPv6 forms) are refused unless ``allow_private=True``, or unless the URL
   names an IP address that the allow-list lists itself;
3. the connection goes to a checked address (the URL is rewritten to the IP), with
   the ``Host`` header and the TLS SNI / certificate check kept on the host name, so a
   second DNS answer can never swap the address.

``secrets`` maps hosts to headers (API keys...) that are added on the host side; the
script cannot read or override them, and they are sent only over HTTPS to exactly the
host and port they were configured for (443 unless given): never over plain http,
never to another port of that host, never after a redirect elsewhere. Their values are
cut out of everything returned to the script, literally and in the encodings an API
may echo them in (percent, base64 and base64url, hex, JSON and JavaScript escapes,
HTML character references, any letter case); that is a safety net for APIs that echo
what they were sent, not a boundary: see `bindings`.

Responses are read as a stream and refused past ``max_response_bytes``; the whole call,
redirects included, has one deadline: the binding's own ``timeout_s`` or what is left of
the script's run, whichever is shorter, and the request is cancelled as soon as the run
ends.

httpx is imported only when ``bindings`` is called, so ``import clambot_tools`` does
not need it.
"""

from __future__ import annotations

import asyncio
import base64
import html.entities
import ipaddress
import json
import re
import socket
import ssl
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from .. import Binding, CallContext, ConfigError, binding, current_call
from . import ToolError
from ._text import text_codec

if TYPE_CHECKING:
    import httpx

_MIB = 1 << 20
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: request headers the script may not set: the host derives them from the URL and body
_MANAGED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    }
)
#: script headers dropped when a redirect leaves the origin
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_MAX_HEADERS = 100
_MIN_REDACTED_CHARS = 4
#: a base64 form of a secret is redacted only from this many characters on
_MIN_BASE64_CHARS = 8
_REDACTED = "[redacted]"
_RUN_OVER = (
    "the script's time limit was reached (or its run ended) before the response "
    "came; the request was cancelled"
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"


class FetchResult(TypedDict):
    """What the fetch binding returns: `headers` has lower-case names (repeated headers
    joined with ", "), `url` is the final URL after redirects."""

    status: int
    headers: dict[str, str]
    text: str
    url: str


class _FetchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(description="absolute http:// or https:// URL on an allowed host")
    method: str = Field("GET", description="GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS")
    headers: dict[str, str] | None = Field(None, description="extra request headers")
    body: Any = Field(
        None,
        description="request body: a string is sent as is (UTF-8); any other JSON "
        "value is sent as JSON with Content-Type application/json",
    )


@dataclass(frozen=True)
class _HostRule:
    """One allow-list entry: a host and the ports allowed on it (None: any)."""

    host: str
    port: int | None


@dataclass(frozen=True)
class _Target:
    """A checked URL of one hop."""

    url: httpx.URL
    scheme: str
    host: str  # ASCII (IDNA), lower case, no brackets for IPv6
    port: int
    ip_literal: _IPAddress | None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def bindings(
    *,
    allow_hosts: Iterable[str],
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 10,
    max_response_bytes: int = _MIB,
    max_redirects: int = 5,
    allow_private: bool = False,
    verify: ssl.SSLContext | None = None,
    prefix: str = "http_",
) -> list[Binding]:
    """The ``<prefix>fetch`` binding (effect ``network``), limited to `allow_hosts`.

    Args:
        allow_hosts: host names (``"api.example.com"``) or host:port
            (``"api.example.com:8443"``, ``"[::1]:8080"``) scripts may reach; no
            wildcards. Without a port any port of the host is allowed. An IP address
            listed here may be reached even if it is private or loopback.
        secrets: headers to add for some hosts, e.g.
            ``{"api.example.com": {"Authorization": "Bearer ..."}}``. A key is
            ``host``, ``host:port`` or ``https://host[:port]``; the headers are sent
            only over HTTPS to that host on that port (443 unless given), which
            `allow_hosts` must allow. The script never sees them and cannot override
            them; their values (and the token of ``Bearer <token>``) are redacted
            from what the script gets back, also when an API echoes them
            percent-encoded, base64/base64url or hex-encoded, JSON/JavaScript-escaped
            or as HTML character references. Redaction cannot catch a secret an API
            returns transformed otherwise (encrypted, hashed, split, reversed,
            double-encoded, one character per response...): give secrets only for
            hosts that do not echo them back.
        timeout_s: deadline of one call, redirects and reading included; a call
            also ends at the deadline of the script's run, and when the run ends.
        max_response_bytes: largest response body (after decompression) accepted.
        max_redirects: most redirects one call follows.
        allow_private: turn the address check off (private, loopback... allowed).
        verify: the TLS context servers are verified with (default: httpx's, with
            the certifi CA bundle), e.g. one that trusts a company CA.
        prefix: prefix of the binding name.

    Returns the bindings to pass to ``Sandbox(bindings=...)``; the call raises
    ToolError with a message for the script, which never contains a secret.

    Raises ConfigError for an invalid entry, a secret for a host or port not in
    `allow_hosts` or for plain ``http://``, or a cap that is not positive; ImportError
    if httpx is not installed.
    """
    import httpx  # noqa: F401 - fail now, not in the first call, if it is missing

    if isinstance(allow_hosts, str):
        raise ConfigError("http.bindings: allow_hosts is a list of host names, not one str")
    rules = [_parse_rule(entry) for entry in allow_hosts]
    if not rules:
        raise ConfigError("http.bindings: allow_hosts is empty, so nothing could be fetched")
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not 0 < timeout_s < float("inf")
    ):
        raise ConfigError(f"http.bindings: timeout_s must be a number > 0, got {timeout_s!r}")
    for cap_name, cap, low in (
        ("max_response_bytes", max_response_bytes, 1),
        ("max_redirects", max_redirects, 0),
    ):
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < low:
            raise ConfigError(f"http.bindings: {cap_name} must be an int >= {low}, got {cap!r}")
    if not isinstance(prefix, str):
        raise ConfigError("http.bindings: prefix must be a str")
    if verify is not None and not isinstance(verify, ssl.SSLContext):
        raise ConfigError("http.bindings: verify must be an ssl.SSLContext")
    secret_rules: list[tuple[_HostRule, dict[str, str]]] = []
    for key, headers in (secrets or {}).items():
        rule = _parse_secret_key(key)
        if not any(_covers(r, rule.host, rule.port) for r in rules):
            raise ConfigError(
                f"http.bindings: secrets given for {key!r}, which is not in allow_hosts "
                f"(secrets go to {_rule_text(rule)} over HTTPS only)"
            )
        checked = {}
        for name, value in headers.items():
            if (
                not isinstance(name, str)
                or not _TOKEN.match(name)
                or not isinstance(value, str)
                or any(c in value for c in "\r\n\0")
            ):
                raise ConfigError(f"http.bindings: invalid secret header {name!r} for {key!r}")
            checked[name] = value
        secret_rules.append((rule, checked))
    fetcher = _Fetcher(
        rules,
        secret_rules,
        float(timeout_s),
        max_response_bytes,
        max_redirects,
        allow_private,
        verify,
    )
    shown_hosts = ", ".join(_rule_text(r) for r in rules[:20]) + (
        ", ..." if len(rules) > 20 else ""
    )
    return [
        binding(
            fetcher.fetch,
            name=f"{prefix}fetch",
            args_schema=_FetchArgs,
            effects=("network",),
            description=(
                "Make an HTTP(S) request and return {status, headers, text, url}: the "
                "status code, the response headers (lower-case names), the body as text "
                "and the final URL after redirects. Only these hosts can be reached: "
                f"{shown_hosts}. Redirects are followed (at most {max_redirects}) only to "
                f"allowed hosts. Bodies over {max_response_bytes} bytes are refused; the "
                f"call fails after {timeout_s:g} s. A non-2xx status is not an error: "
                "check `status`. Some hosts get credentials added by the host "
                "application; you do not need to (and cannot) set or read them."
            ),
        ),
    ]


def _parse_rule(entry: str) -> _HostRule:
    """An allow-list or secrets key as a rule. Raises ConfigError if it is not a host."""
    import httpx

    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"http.bindings: invalid host entry {entry!r}")
    text = entry.strip()
    if "://" in text or "/" in text or "@" in text:
        raise ConfigError(
            f"http.bindings: {entry!r} should be a host name like "
            "'api.example.com' or 'api.example.com:8443', not a URL"
        )
    if text.count(":") > 1 and not text.startswith("["):  # bare IPv6 address
        text = f"[{text}]"
    try:
        host = _norm_host(httpx.URL(f"http://{text}/"))
        port = urllib.parse.urlsplit(f"//{text}").port  # httpx would drop an explicit :80
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise ConfigError(f"http.bindings: invalid host entry {entry!r}") from None
    if not host:
        raise ConfigError(f"http.bindings: invalid host entry {entry!r}")
    return _HostRule(host, port)


def _parse_secret_key(key: str) -> _HostRule:
    """A secrets key as the one HTTPS host and port its headers go to.

    Raises ConfigError for plain http or a key that is not a host."""
    text = key.strip() if isinstance(key, str) else key
    if isinstance(text, str) and text.lower().startswith("http://"):
        raise ConfigError(
            f"http.bindings: secrets for {key!r}: secrets are sent only over HTTPS; "
            "give the host as 'api.example.com' or 'https://api.example.com:8443'"
        )
    if isinstance(text, str) and text.lower().startswith("https://"):
        text = text[len("https://") :].rstrip("/")
    rule = _parse_rule(text)
    return _HostRule(rule.host, rule.port or _DEFAULT_PORTS["https"])


def _rule_text(rule: _HostRule) -> str:
    host = f"[{rule.host}]" if ":" in rule.host else rule.host
    return host if rule.port is None else f"{host}:{rule.port}"


def _norm_host(url: httpx.URL) -> str:
    """The URL's host as compared with the allow-list: ASCII (IDNA), lower case, no
    trailing dot; an IP address in its canonical form."""
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    ip = _ip(host)
    return str(ip) if ip is not None and "%" not in host else host


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    try:
        host = _norm_host(url)
    except UnicodeError:
        host = ""
    return scheme, host, url.port or _DEFAULT_PORTS.get(scheme)


def _covers(rule: _HostRule, host: str, port: int | None) -> bool:
    return rule.host == host and (rule.port is None or rule.port == port)


def _ip(text: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is a globally routable unicast address (IPv4 embedded in IPv6 forms
    such as ``::ffff:a.b.c.d``, 6to4, Teredo and NAT64 is checked as IPv4; the
    deprecated IPv6 site-local range ``fec0::/10`` is not public)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if not all(is_public_address(v4) for v4 in embedded):
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False  # fec0::/10: deprecated, yet still routed inside some networks
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


class _Fetcher:
    """The request logic behind the binding."""

    def __init__(
        self,
        rules: list[_HostRule],
        secret_rules: list[tuple[_HostRule, dict[str, str]]],
        timeout_s: float,
        max_bytes: int,
        max_redirects: int,
        allow_private: bool,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.rules = rules
        self.secret_rules = secret_rules
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.allow_private = allow_private
        self._ssl: ssl.SSLContext | None = verify
        values: set[str] = set()
        for _, headers in secret_rules:
            for value in headers.values():
                values.add(value)
                values.update(value.split(None, 1)[1:])  # the token of "Bearer <token>"
        self.redact = _Redactor(values)

    async def fetch(
        self, url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None
    ) -> FetchResult:
        """Make the request, following allowed redirects; status, headers, text, url.

        Raises ToolError if the URL, a redirect or an address is refused, the response
        is too large, the deadline passes, the script's run ends, or the request fails.
        """
        call = current_call()
        budget = self.timeout_s if call is None else min(self.timeout_s, call.remaining())
        if call is not None and (call.cancelled or budget <= 0):
            raise ToolError(_RUN_OVER)
        work = asyncio.ensure_future(self._fetch(url, method, headers, body, budget))
        ended = asyncio.ensure_future(_run_ended(call))
        try:
            await asyncio.wait({work, ended}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this task itself is cancelled: the request must not go on
            ended.cancel()
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
        if call is not None and call.cancelled:  # whatever came back is too late
            raise ToolError(_RUN_OVER)
        if not work.cancelled():
            return work.result()  # the result, or the ToolError it raised
        raise ToolError(f"the request took longer than {budget:.3g} s")

    async def _fetch(
        self, url: str, method: str, headers: dict[str, str] | None, body: Any, budget: float
    ) -> FetchResult:
        import httpx

        method = method.upper()
        if method not in _METHODS:
            raise ToolError(
                f"method {method!r} is not allowed; use one of " + ", ".join(sorted(_METHODS))
            )
        script_headers = _check_headers(headers or {})
        content = _encode_body(body, script_headers)
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ToolError(f"invalid URL: {self.redact(str(exc))}") from None
        for hop in range(self.max_redirects + 1):
            target = self._check_url(current)
            addresses = await self._addresses(target)
            send_headers = dict(script_headers)
            secrets = self._secrets_for(target)
            for name in list(send_headers):
                if name.lower() in {s.lower() for s in secrets}:
                    del send_headers[name]
            send_headers.update(secrets)
            send_headers["Host"] = target.host_header
            send_headers["Accept-Encoding"] = "identity"
            outcome = await self._send(target, addresses, method, send_headers, content, budget)
            if not isinstance(outcome, tuple):
                outcome["url"] = self.redact(str(current))
                return outcome
            status, location = outcome
            if hop == self.max_redirects:
                raise ToolError(
                    f"more than {self.max_redirects} redirects; stopped at "
                    f"{self.redact(str(current))}"
                )
            try:
                nxt = current.join(location)
            except (httpx.InvalidURL, TypeError, ValueError):
                raise ToolError(
                    f"the server redirected to an invalid URL ({self.redact(location)!r})"
                ) from None
            if _origin(nxt) != _origin(current):
                for name in list(script_headers):
                    if name.lower() in _CREDENTIAL_HEADERS:
                        del script_headers[name]
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, content = "GET", None
                for name in list(script_headers):
                    if name.lower() == "content-type":
                        del script_headers[name]
            current = nxt
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_url(self, url: httpx.URL) -> _Target:
        """The hop's target, or ToolError if the URL or its host is not allowed."""
        scheme = url.scheme.lower()
        shown = self.redact(str(url))
        if scheme not in _DEFAULT_PORTS:
            raise ToolError(f"only http and https URLs can be fetched, not {shown!r}")
        if url.userinfo:
            raise ToolError(
                "credentials in the URL (user:password@) are not supported; "
                "send an Authorization header instead"
            )
        try:
            host = _norm_host(url)
        except UnicodeError:
            host = ""
        if not host:
            raise ToolError(f"the URL {shown!r} has no host")
        port = url.port or _DEFAULT_PORTS[scheme]
        if not any(_covers(r, host, port) for r in self.rules):
            shown_host = f"[{host}]" if ":" in host else host
            raise ToolError(f"the host {shown_host}:{port} is not in the list of allowed hosts")
        return _Target(url, scheme, host, port, _ip(host))

    async def _addresses(self, target: _Target) -> list[str]:
        """The checked IP addresses to connect to for `target`.

        Raises ToolError if the host does not resolve or any address is refused.
        """
        if target.ip_literal is not None:  # listed explicitly in allow_hosts
            return [str(target.ip_literal)]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError):
            raise ToolError(f"could not resolve the host {target.host}") from None
        found: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = _ip(str(sockaddr[0]))
            if ip is None:
                continue
            if not self.allow_private and not is_public_address(ip):
                raise ToolError(
                    f"the host {target.host} resolves to a private, loopback or "
                    "reserved address; refused"
                )
            if str(ip) not in found:
                found.append(str(ip))
        if not found:
            raise ToolError(f"could not resolve the host {target.host}")
        return found

    def _secrets_for(self, target: _Target) -> dict[str, str]:
        """The secret headers for `target`: only over HTTPS, to the exact host and port."""
        out: dict[str, str] = {}
        if target.scheme != "https":
            return out
        for rule, headers in self.secret_rules:
            if rule.host == target.host and rule.port == target.port:
                out.update(headers)
        return out

    async def _send(
        self,
        target: _Target,
        addresses: list[str],
        method: str,
        headers: dict[str, str],
        content: bytes | None,
        budget: float,
    ) -> FetchResult | tuple[int, str]:
        """Send one request to the first address that connects.

        Returns the result for the script, or (status, location) for a redirect.
        Raises ToolError if no address connects or the exchange fails.
        """
        import httpx

        extensions = {}
        if target.scheme == "https" and target.ip_literal is None:
            extensions["sni_hostname"] = target.host
        timeout = httpx.Timeout(budget)
        async with httpx.AsyncClient(
            trust_env=False, verify=self._ssl_context(), follow_redirects=False, timeout=timeout
        ) as client:
            failure = ""
            for ip in addresses:
                request = client.build_request(
                    method,
                    target.url.copy_with(host=ip),
                    headers=headers,
                    content=content,
                    extensions=extensions,
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    failure = str(exc)
                    continue
                except httpx.TimeoutException:
                    raise ToolError(f"the request took longer than {budget:.3g} s") from None
                except httpx.HTTPError as exc:
                    raise ToolError(
                        f"the request to {target.host_header} failed: "
                        f"{self.redact(str(exc)) or type(exc).__name__}"
                    ) from None
                try:
                    return await self._receive(target, method, response, budget)
                finally:
                    await response.aclose()
        reason = self.redact(failure)
        raise ToolError(
            f"could not connect to {target.host_header}" + (f": {reason}" if reason else "")
        )

    async def _receive(
        self, target: _Target, method: str, response: httpx.Response, budget: float
    ) -> FetchResult | tuple[int, str]:
        """Read the response (capped) into the result, or (status, location) of a redirect.

        Raises ToolError if the body is too large, corrupt, or cannot be read in time.
        """
        import httpx

        location = response.headers.get("location")
        if response.status_code in _REDIRECTS and location:
            return response.status_code, location
        length = response.headers.get("content-length", "")
        if method != "HEAD" and length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large()
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise ToolError(f"the response uses the unsupported content encoding {coding!r}")
        # 32 + 15: zlib or gzip header, detected; output bounded so a bomb cannot grow
        inflate = zlib.decompressobj(47) if coding not in ("", "identity") else None
        data = bytearray()
        try:
            async for chunk in response.aiter_raw():
                if inflate is not None:
                    chunk = inflate.decompress(chunk, self.max_bytes + 1 - len(data))
                    if inflate.unconsumed_tail:
                        raise self._too_large()
                data += chunk
                if len(data) > self.max_bytes:
                    raise self._too_large()
            if inflate is not None:
                data += inflate.flush()
                if len(data) > self.max_bytes:
                    raise self._too_large()
        except zlib.error:
            raise ToolError(f"the response's {coding} body is corrupt") from None
        except httpx.TimeoutException:
            raise ToolError(f"the request took longer than {budget:.3g} s") from None
        except httpx.HTTPError as exc:
            raise ToolError(
                f"reading the response from {target.host_header} failed: "
                f"{self.redact(str(exc)) or type(exc).__name__}"
            ) from None
        try:  # the server names the charset: only ordinary, linear-time ones are used
            codec = text_codec(response.charset_encoding or "utf-8")
        except LookupError:
            codec = text_codec("utf-8")
        merged: dict[str, str] = {}
        for name, value in response.headers.multi_items():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return {
            "status": response.status_code,
            "headers": {k: self.redact(v) for k, v in merged.items()},
            "text": self.redact(codec.decode(bytes(data), "replace")[0]),
            "url": "",  # the caller knows it
        }

    def _too_large(self) -> ToolError:
        return ToolError(f"the response is larger than the {self.max_bytes}-byte limit")

    def _ssl_context(self) -> ssl.SSLContext:
        """One verifying TLS context for all calls (loading the CA bundle costs ~20 ms)."""
        if self._ssl is None:
            import httpx

            self._ssl = httpx.create_ssl_context()
        return self._ssl


async def _run_ended(call: CallContext | None) -> None:
    """Return once the script's run ends (never, outside a run)."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    if call is None:
        await ended.wait()
        return
    unregister = call.on_cancel(lambda: loop.call_soon_threadsafe(ended.set))
    try:
        await ended.wait()
    finally:
        unregister()


class _Redactor:
    """Cuts secret values out of text: literally and in the encodings an API may echo
    them in.

    Forms covered, also mixed within one occurrence: each character as itself (in
    either letter case), percent-encoded (``%2F`` or ``%2f``; ``+`` for a space), as
    an HTML character reference (``&#47;``, ``&#x2F;``, ``&sol;``), or escaped as in
    JSON or JavaScript (``\\u002f``, ``\\x2f``, ``\\/``); the whole value base64- or
    base64url-encoded (at any offset inside a longer encoded text) or hex-encoded.
    Not covered: any other transformation (see `bindings`).
    """

    def __init__(self, values: Iterable[str]) -> None:
        # Every alternative starts with one literal character, so the regex engine
        # skips in C over text that cannot start a match (~30x faster than one
        # case-insensitive pattern).
        alternatives: list[str] = []
        kept = {v.strip() for v in values if len(v.strip()) >= _MIN_REDACTED_CHARS}
        for value in sorted(kept, key=lambda v: (-len(v), v)):  # "Bearer x" before "x"
            rest = "".join(_any_of(_char_forms(c)) for c in value[1:])
            alternatives += [first + rest for first in _char_forms(value[0])]
            raw = value.encode("utf-8", "surrogatepass")
            alternatives += _caseless(raw.hex())
            for core in _base64_cores(raw):
                alternatives.append(re.escape(core))
                if core.translate(_URLSAFE) != core:
                    alternatives.append(re.escape(core.translate(_URLSAFE)))
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, text: str) -> str:
        """`text` with every form of every secret replaced by ``[redacted]``."""
        if self._pattern is None:
            return text
        return self._pattern.sub(_REDACTED, text)


_URLSAFE = str.maketrans("+/", "-_")
_NAMED_REFERENCES: dict[str, list[str]] = {}
for _name, _char in html.entities.html5.items():
    _NAMED_REFERENCES.setdefault(_char, []).append(_name)


def _char_forms(c: str) -> list[str]:
    """Regular expressions for the character `c` as itself or escaped, each starting
    with a literal character."""
    code = ord(c)
    forms = _caseless(c)
    forms.append("".join(f"%{_hex_digits(b, 2)}" for b in c.encode("utf-8", "surrogatepass")))
    if c == " ":
        forms.append(r"\+")
    forms.append(f"&#0*{code};?")
    forms.append(f"&#[xX]0*{_hex_digits(code, 1)};?")
    forms.extend(re.escape(f"&{name}") for name in _NAMED_REFERENCES.get(c, ()))
    if code > 0xFFFF:  # JSON escapes it as a surrogate pair
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(rf"\\u{_hex_digits(high, 4)}\\u{_hex_digits(low, 4)}")
    else:
        forms.append(rf"\\u{_hex_digits(code, 4)}")
    if code < 0x100:
        forms.append(rf"\\x{_hex_digits(code, 2)}")
    if not c.isalnum():
        forms.append(r"\\" + re.escape(c))
    return forms


def _caseless(text: str) -> list[str]:
    """Regular expressions for `text` in any letter case: one per case of its first
    character (so each starts with a literal), the rest as character classes."""
    rest = "".join(
        f"[{ch.lower()}{ch.upper()}]" if ch.lower() != ch.upper() else re.escape(ch)
        for ch in text[1:]
    )
    firsts = dict.fromkeys((text[0].lower(), text[0].upper()))  # one if uncased
    return [re.escape(first) + rest for first in firsts]


def _hex_digits(number: int, width: int) -> str:
    """A regular expression for `number` in hex, `width` digits, in any letter case."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def _any_of(forms: list[str]) -> str:
    return "(?:" + "|".join(forms) + ")"


def _base64_cores(raw: bytes) -> list[str]:
    """The base64 characters that `raw` alone decides, for each of the three offsets
    it may start at inside a longer encoded text."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode("ascii")
        first = -(-8 * offset // 6)  # the first character holding no byte before `raw`
        last = 8 * (offset + len(raw)) // 6  # past the last one holding only `raw`'s bits
        core = encoded[first:last]
        if len(core) >= _MIN_BASE64_CHARS:
            cores.append(core)
    return cores


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    """The script's request headers, checked. Raises ToolError for a bad or managed one."""
    if len(headers) > _MAX_HEADERS:
        raise ToolError(f"at most {_MAX_HEADERS} request headers")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ToolError(f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise ToolError(f"the value of header {name!r} contains a line break or NUL")
        lower = name.lower()
        if lower in _MANAGED_HEADERS:
            raise ToolError(
                f"the {name} header is set by the host (from the URL and body); leave it out"
            )
        if lower == "accept-encoding":
            continue  # always identity: we read (and cap) the body ourselves
        out[name] = value
    return out


def _encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """The request body as bytes; a JSON value also sets Content-Type if unset.

    Raises ToolError for text that UTF-8 cannot encode.
    """
    if body is None:
        return None
    try:
        if isinstance(body, str):
            return body.encode("utf-8")
        if not any(n.lower() == "content-type" for n in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError):
        raise ToolError(
            "the body cannot be encoded (unpaired surrogates or a non-JSON number)"
        ) from None
