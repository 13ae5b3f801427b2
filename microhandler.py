"""microhandler: a one-file WSGI and ASGI micro-framework with Django's request handler at
its heart. Read it top to bottom, a section a line:

- lazy imports: patterns compiled, and urllib.parse imported, on first use;
- exceptions: HttpError and its family, the configuration errors;
- data structures: MultiDict, QueryDict, Headers;
- signals: request_started, request_finished, got_request_exception;
- request and parsers: Request, lazily parsed (query, forms, multipart, cookies, JSON);
- responses: HttpResponse, JSON, streaming, files, redirects, TemplateResponse;
- templates: the small Django-like engine (extends, blocks, include, filters);
- routing: Route, the flat compiled Resolver, static();
- forwarding: proxy(), a route that streams to a backend;
- views: class-based View;
- databases: request.db from a per-thread pool, atomic views;
- middleware and App: the onion, the request's journey (one for both interfaces), errors;
- async and ASGI: ASGIHandler (HTTP, lifespan, WebSocket), the sync/async bridges;
- batteries: sessions, messages, CSRF, CORS, GZip, conditional GET, security headers;
- test client: Client (WSGI or ASGI), WebSocket sessions;
- servers and command line: the strict built-in HTTP/1.1 server, waitress, uvicorn, serve().

The core imports only the standard library, and asyncio only when something async runs;
waitress, uvicorn and jinja2 are optional and imported inside the functions that use them.
"""
# Optional servers may be missing or untyped; a user's `mypy --strict` must not fail on them.
# mypy: disable-error-code="import-untyped,import-not-found"

from __future__ import annotations

import _thread
import io
import os
import sys

# PERF: collections.abc re-exports these from _collections_abc, and importing it also runs
# collections/__init__ (deque, namedtuple, OrderedDict...: ~2 ms) that microhandler never uses.
from _collections_abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextvars import ContextVar, copy_context

# Checkers (mypy, pyright) read this name as True. Not `from typing import TYPE_CHECKING`:
# that would import typing, milliseconds of import time, for type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import re
    import socket
    import subprocess
    from typing import IO, Any, AnyStr, TypeVar

    _StrMapping = Mapping[str, Any]
    _HeaderMapping = Mapping[str, str]
    _StrMutableMapping = MutableMapping[str, Any]
    _F = TypeVar("_F", bound=Callable[..., Any])
    # A request's journey: yields (function, args, kwargs, offload), returns the response.
    _Receive = Callable[[], Awaitable[dict[str, Any]]]
    _Send = Callable[[dict[str, Any]], Awaitable[None]]
    _Journey = Generator[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool],
                         Any, Any]
    # For the public signatures (issue 14): what each takes and gives, for users' checkers.
    import json
    from datetime import datetime, timedelta
    from http.cookies import SimpleCookie
    from typing import overload

    _T = TypeVar("_T")
    _Middleware = TypeVar("_Middleware", bound=Callable[..., Any] | str)
else:
    _StrMapping = _HeaderMapping = Mapping
    _StrMutableMapping = MutableMapping

__version__ = "0.1.0"

__all__ = [
    "ASGIHandler", "App", "BadHeaderError", "BadRequest", "Client", "ClientResponse",
    "ConditionalGetMiddleware", "CorsMiddleware", "CsrfViewMiddleware", "DisallowedRedirect",
    "FileResponse", "GZipMiddleware", "Headers", "Http404", "HttpError", "HttpResponse",
    "HttpResponseRedirect", "ImproperlyConfigured", "JsonResponse", "LimitedStream",
    "MethodNotAllowed", "MiddlewareNotUsed", "MultiDict", "NoReverseMatch", "PermissionDenied",
    "QueryDict", "RawPostDataException", "Request", "RequestDataTooBig", "Resolver",
    "ResolverMatch", "Route", "SafeString", "SecurityMiddleware", "SessionMiddleware", "Signal",
    "StreamingHttpResponse", "Template", "TemplateError", "TemplateLoader", "TemplateResponse",
    "UploadedFile", "View", "WebSocket", "WebSocketDisconnect", "WebSocketSession", "add_message",
    "check_header", "convert_exception_to_response", "csrf_exempt", "csrf_token", "escape",
    "get_messages", "got_request_exception", "include", "is_safe_url", "main", "make_server",
    "mark_safe", "markcoroutinefunction", "non_atomic_requests", "parse_query_string", "proxy",
    "redirect", "request_finished", "request_started", "route", "serve", "static",
]


# ---------------------------------------------------------------- lazy imports

# PERF: `import microhandler` must stay cheap (issue 15: a fifth of Bottle's). Importing `re`,
# `urllib.parse` and `contextlib` and compiling some forty patterns took over half of it,
# for parsers, servers and batteries a given app may never use. So no module-level code
# needs them: patterns are compiled on first use, urllib.parse is imported by the first
# quote() or urlsplit(), and unquote_to_bytes, which the query parser calls, is our own.

class _LazyRegex:
    """A pattern compiled by its first use, not at import.

    The first attribute asked for compiles the pattern and rebinds the module-level name
    that held this object to the compiled pattern: from then on `_NAME.match(...)` costs
    exactly what it cost with a pattern compiled at import (a lookup through this object
    would add ~15%). A holder other than a module-level name gets the compiled pattern's
    methods, stored on this object. Flags are written inline (`(?s)`, `(?i)`, `(?x)`), so
    that building one needs no `re` either."""

    _METHODS = ("match", "fullmatch", "search", "finditer", "findall", "sub", "split")

    def __init__(self, pattern: str | bytes) -> None:
        self.pattern = pattern

    def __getattr__(self, name: str) -> Any:
        import re
        compiled = re.compile(self.pattern)
        for method in self._METHODS:
            setattr(self, method, getattr(compiled, method))
        module = globals()
        for key, value in list(module.items()):  # list(): one step, whatever other threads do
            if value is self:
                module[key] = compiled
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"<_LazyRegex {self.pattern!r}>"


if TYPE_CHECKING:  # checkers see the compiled pattern that it stands for
    def _lazy_regex(pattern: AnyStr) -> re.Pattern[AnyStr]: ...
else:
    _lazy_regex = _LazyRegex


if TYPE_CHECKING:
    from urllib.parse import quote, urlsplit
else:
    def quote(string, safe="/", encoding=None, errors=None):
        """urllib.parse.quote, imported on first call."""
        import urllib.parse
        return urllib.parse.quote(string, safe, encoding, errors)

    def urlsplit(url):
        """urllib.parse.urlsplit, imported on first call."""
        import urllib.parse
        return urllib.parse.urlsplit(url)


_HEX_TO_BYTE: dict[bytes, bytes] = {}   # b"2F" and b"2f": b"/"; filled on first use


def unquote_to_bytes(string: str | bytes) -> bytes:
    """urllib.parse.unquote_to_bytes: each %XX is the byte; a bad escape is kept as it is."""
    if isinstance(string, str):
        string = string.encode("utf-8")
    pieces = string.split(b"%")
    if len(pieces) == 1:
        return string
    if not _HEX_TO_BYTE:
        digits = "0123456789ABCDEFabcdef"
        _HEX_TO_BYTE.update({(a + b).encode(): bytes.fromhex(a + b)
                             for a in digits for b in digits})
    out = [pieces[0]]
    for piece in pieces[1:]:
        byte = _HEX_TO_BYTE.get(piece[:2])
        out += (b"%", piece) if byte is None else (byte, piece[2:])
    return b"".join(out)


# ---------------------------------------------------------------- exceptions

class HttpError(Exception):
    """An exception that becomes a response with its HTTP status."""

    status: int = 500

    def __init__(self, status: int | None = None, message: str = "") -> None:
        if status is not None:
            self.status = status
        self.message = message
        super().__init__(message or f"HTTP {self.status}")


class BadRequest(HttpError):
    status = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(None, message)


class DisallowedRedirect(BadRequest):
    """A redirect to a scheme other than http or https."""


class PermissionDenied(HttpError):
    status = 403

    def __init__(self, message: str = "") -> None:
        super().__init__(None, message)


class Http404(HttpError):
    status = 404

    def __init__(self, message: str = "") -> None:
        super().__init__(None, message)


class MethodNotAllowed(HttpError):
    status = 405

    def __init__(self, allowed: Iterable[str] = (), message: str = "") -> None:
        self.allowed = sorted(set(allowed))
        super().__init__(None, message)


class RequestDataTooBig(HttpError):
    status = 413

    def __init__(self, message: str = "") -> None:
        super().__init__(None, message)


class ImproperlyConfigured(Exception):
    """The application is set up wrongly (a middleware, a route, a missing secret_key)."""


class RawPostDataException(Exception):
    """The body was asked for (`body`, `POST`, `FILES`, `json`) after part of it was read
    from `request.stream`: a programming error (a 500), as in Django; read it first."""


class MiddlewareNotUsed(Exception):
    """Raised by a middleware factory to take itself out of the chain."""


class NoReverseMatch(Exception):
    """reverse() found no route of that name whose placeholders fit the values."""


class BadHeaderError(ValueError):
    """A header name or value holds CR, LF or NUL (it would split the response)."""


class TemplateError(Exception):
    """A template could not be found, parsed or rendered; the message names it and the line."""


# ---------------------------------------------------------------- data structures

class MultiDict(_StrMapping):
    """A mapping of keys to lists of values; `d[k]` is the last value, as in Django.

    Immutable unless made by `copy()` (or constructed with `mutable=True`).
    """

    def __init__(self, items: Iterable[tuple[str, Any]] | Mapping[str, Any] = (),
                 *, mutable: bool = False) -> None:
        self._lists: dict[str, list[Any]] = {}
        if type(items) is list:  # PERF: the parsers' pairs, without the ABC checks below
            pass
        elif isinstance(items, MultiDict):
            items = items.multi_items()
        elif isinstance(items, Mapping):
            items = items.items()
        for key, value in items:
            self._lists.setdefault(key, []).append(value)
        self._mutable = mutable

    def _check_mutable(self) -> None:
        if not self._mutable:
            raise AttributeError(f"This {type(self).__name__} is immutable; use .copy()")

    def __getitem__(self, key: str) -> Any:
        try:
            return self._lists[key][-1]
        except (KeyError, IndexError):
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, key: object) -> bool:
        return key in self._lists

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self._lists!r}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MultiDict):
            return self._lists == other._lists
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def get(self, key: str, default: Any = None) -> Any:
        values = self._lists.get(key)
        return values[-1] if values else default

    def getlist(self, key: str, default: list[Any] | None = None) -> list[Any]:
        if key in self._lists:
            return list(self._lists[key])
        return [] if default is None else default

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """Each key with its last value."""
        for key, values in self._lists.items():
            yield key, values[-1]

    def lists(self) -> Iterator[tuple[str, list[Any]]]:
        for key, values in self._lists.items():
            yield key, list(values)

    def multi_items(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value) pair, repeated keys included."""
        for key, values in self._lists.items():
            for value in values:
                yield key, value

    def dict(self) -> dict[str, Any]:
        return {key: values[-1] for key, values in self._lists.items()}

    def copy(self) -> MultiDict:
        return type(self)(self.multi_items(), mutable=True)

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_mutable()
        self._lists[key] = [value]

    def __delitem__(self, key: str) -> None:
        self._check_mutable()
        del self._lists[key]

    def setlist(self, key: str, values: list[Any]) -> None:
        self._check_mutable()
        self._lists[key] = list(values)

    def appendlist(self, key: str, value: Any) -> None:
        self._check_mutable()
        self._lists.setdefault(key, []).append(value)

    def pop(self, key: str, *default: Any) -> Any:
        self._check_mutable()
        if key in self._lists:
            return self._lists.pop(key)[-1]
        if default:
            return default[0]
        raise KeyError(key)


class QueryDict(MultiDict):
    """The MultiDict of query strings and forms; `QueryDict("a=1&b=2")` parses one."""

    if TYPE_CHECKING:  # its values are text: checkers see str where a MultiDict has Any
        def __getitem__(self, key: str) -> str: ...
        @overload  # type: ignore[override]
        def get(self, key: str) -> str | None: ...
        @overload
        def get(self, key: str, default: str) -> str: ...
        @overload
        def get(self, key: str, default: _T) -> str | _T: ...
        def get(self, key: str, default: Any = None) -> Any: ...
        def getlist(self, key: str, default: list[str] | None = None) -> list[str]: ...
        def items(self) -> Iterator[tuple[str, str]]: ...  # type: ignore[override]
        def lists(self) -> Iterator[tuple[str, list[str]]]: ...
        def multi_items(self) -> Iterator[tuple[str, str]]: ...
        def dict(self) -> dict[str, str]: ...
        def copy(self) -> QueryDict: ...

    def __init__(self, query: str | bytes | Iterable[tuple[str, str]] | None = None,
                 *, mutable: bool = False, encoding: str = "utf-8") -> None:
        if type(query) is str and encoding == "utf-8":
            # PERF: a query with nothing to decode goes straight into the lists, without
            # the pairs in between (half the cost of request.GET).
            lists = _split_plain_query(query)
            if lists is not None:
                self._lists = lists
                self._mutable = mutable
                return
        if query is None:
            query = ()
        elif isinstance(query, (str, bytes)):
            query = parse_query_string(query, encoding)
        super().__init__(query, mutable=mutable)

    def urlencode(self) -> str:
        return "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}"
                        for k, v in self.multi_items())


# Bytes looked for in bytes as ints. PERF: `b"%" in data` costs three times as much, as
# bytes.__contains__ tries its argument as an int first, and raises and clears a TypeError.
_PERCENT, _PLUS, _QUESTION_MARK, _UNDERSCORE = ord("%"), ord("+"), ord("?"), ord("_")


def _decode_form_component(raw: bytes, encoding: str) -> str:
    if _PERCENT not in raw and _PLUS not in raw:
        return raw.decode(encoding, "replace")
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode(encoding, "replace")


def _split_plain_query(query: str) -> dict[str, list[str]] | None:
    """A QueryDict's lists for a query with nothing to decode (ASCII without escapes or
    `+`); None for the others."""
    if not query.isascii() or "%" in query or "+" in query:
        return None
    lists: dict[str, list[str]] = {}
    for field in query.split("&"):
        if field:
            key, _, value = field.partition("=")
            if key in lists:
                lists[key].append(value)
            else:
                lists[key] = [value]
    return lists


def parse_query_string(query: str | bytes, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """Parse `a=1&b=&c` leniently: `&` alone separates, bad escapes decode with replacement."""
    if isinstance(query, str):
        if encoding == "utf-8" and query.isascii() and "%" not in query and "+" not in query:
            # PERF: the usual query has nothing to decode: split it as it is.
            return [(key, value) for key, _, value in
                    (field.partition("=") for field in query.split("&") if field)]
        query = query.encode("latin-1", "replace")
    pairs = []
    for field in query.split(b"&"):
        if not field:
            continue
        key, _, value = field.partition(b"=")
        pairs.append((_decode_form_component(key, encoding),
                      _decode_form_component(value, encoding)))
    return pairs


class Headers(_HeaderMapping):
    """Case-insensitive, read-only view of a request's HTTP headers, built from the environ."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _environ_key(name: str) -> str:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return key
        return "HTTP_" + key

    def __getitem__(self, name: str) -> str:
        value: str = self._environ[self._environ_key(name)]
        return value

    if TYPE_CHECKING:  # a header's value is text; get() without a default may give None
        @overload
        def get(self, name: str) -> str | None: ...
        @overload
        def get(self, name: str, default: str) -> str: ...
        @overload
        def get(self, name: str, default: _T) -> str | _T: ...

    def get(self, name: str, default: Any = None) -> Any:
        return self._environ.get(self._environ_key(name), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._environ_key(name) in self._environ

    def _names(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").title()

    def __iter__(self) -> Iterator[str]:
        return self._names()

    def __len__(self) -> int:
        return sum(1 for _ in self._names())

    def __repr__(self) -> str:
        return f"<Headers {dict(self.items())!r}>"


# RFC 9110 token: what a header name (and a header parameter's name) may be.
_TOKEN_RE = _lazy_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters but tab: CR, LF and NUL would split the response; the others are
# refused by servers (and wsgiref.validate) anyway.
_HEADER_VALUE_CONTROL = _lazy_regex(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_header(name: str, value: str) -> tuple[str, str]:
    """Refuse a header that could split the response (CR, LF, NUL), a name that is not an
    RFC 9110 token, and a value PEP 3333 cannot send (not latin-1)."""
    if _TOKEN_RE.fullmatch(name) is None:
        raise BadHeaderError(f"Header name {name!r} is not a token (letters, digits, -)")
    if _HEADER_VALUE_CONTROL.search(value) is not None:
        raise BadHeaderError(f"Header {name!r} holds CR, LF, NUL or another control "
                             f"character: {value!r}")
    if not value.isascii() and max(value) > "\xff":
        raise BadHeaderError(f"Header {name!r} is not latin-1 text (PEP 3333); "
                             f"percent-encode it: {value!r}")
    return name, value


# ---------------------------------------------------------------- signals

class Signal:
    """A list of receivers called as `receiver(sender, **kwargs)` by `send()`."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.receivers: list[Callable[..., Any]] = []
        self._lock = _thread.allocate_lock()

    def connect(self, receiver: _F) -> _F:
        """Add a receiver (once); returns it, so `connect` also works as a decorator."""
        with self._lock:
            if receiver not in self.receivers:
                # Copy on write: send() iterates without taking the lock.
                self.receivers = [*self.receivers, receiver]
        return receiver

    def disconnect(self, receiver: Callable[..., Any]) -> bool:
        with self._lock:
            if receiver not in self.receivers:
                return False
            self.receivers = [r for r in self.receivers if r != receiver]
            return True

    def send(self, sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver; a receiver's exception propagates to the sender."""
        return [(receiver, receiver(sender, **kwargs)) for receiver in self.receivers]

    def send_robust(self, sender: Any, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver; one that raises is logged and its exception returned in
        its place, so the others still run. The framework's own signals are sent so."""
        results: list[tuple[Callable[..., Any], Any]] = []
        for receiver in self.receivers:
            try:
                results.append((receiver, receiver(sender, **kwargs)))
            except Exception as exc:
                _log.exception("Signal receiver %s of %s failed", _name_of(receiver), self)
                results.append((receiver, exc))
        return results

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"


request_started = Signal("request_started")
request_finished = Signal("request_finished")
got_request_exception = Signal("got_request_exception")


# ---------------------------------------------------------------- request and parsers

# -- parsers: header parameters

_QUOTE_OR_BACKSLASH_RE = _lazy_regex(r'["\\]')


def _parse_options_header(value: str) -> tuple[str, dict[str, str]]:
    """Split `text/plain; charset="utf-8"` into ("text/plain", {"charset": "utf-8"}).

    The main value and the keys are lowercased; a repeated key keeps its last value (as
    Werkzeug and Django do); a part without `=` or with an invalid key is skipped. RFC 2231
    keys such as `filename*` are kept under their own name and not decoded. One left to
    right scan: linear in the length of `value` whatever it holds.
    """
    end = value.find(";")
    if end < 0:
        return value.strip(" \t").lower(), {}
    params: dict[str, str] = {}
    pos = end + 1
    while pos < len(value):
        pos = _parse_param(value, pos, params)
    return value[:end].strip(" \t").lower(), params


def _parse_param(text: str, pos: int, params: dict[str, str]) -> int:
    """Parse the `key=value` that starts at `pos` into `params`; return where the next starts."""
    stop = text.find(";", pos)
    stop = len(text) if stop < 0 else stop
    # Bounded by `stop`: an unbounded find of "=" would rescan the rest for each `;`.
    eq = text.find("=", pos, stop)
    if eq < 0:
        return stop + 1
    key = text[pos:eq].strip(" \t").lower()
    start = eq + 1
    while start < stop and text[start] in " \t":
        start += 1
    if start < stop and text[start] == '"':
        quoted = _scan_quoted(text, start + 1)
        if quoted is None:
            # Unterminated: everything left is inside the quotes, so nothing follows.
            return len(text)
        val, after = quoted
        stop = text.find(";", after)
        stop = len(text) if stop < 0 else stop
    else:
        val = text[start:stop].strip(" \t")
    if _TOKEN_RE.fullmatch(key):
        params[key] = val
    return stop + 1


def _scan_quoted(text: str, pos: int) -> tuple[str, int] | None:
    """Read a quoted string whose opening quote is just before `pos`: (value, index past
    the closing quote), or None when it is not closed."""
    pieces: list[str] = []
    while True:
        special = _QUOTE_OR_BACKSLASH_RE.search(text, pos)
        if special is None:
            return None
        at = special.start()
        pieces.append(text[pos:at])
        if text[at] == '"':
            return "".join(pieces), at + 1
        following = text[at + 1 : at + 2]
        # Only \\ and \" are escapes: browsers of old sent Windows paths unescaped
        # (filename="C:\dir\a.txt"), which must keep their backslashes to be cut to "a.txt".
        if following in ('"', "\\"):
            pieces.append(following)
            pos = at + 2
        else:
            pieces.append("\\")
            pos = at + 1


# -- parsers: cookies

_COOKIE_SPACE = " \t\r\n\x0b\x0c"
_COOKIE_BAD_NAME_RE = _lazy_regex(r"[\x00-\x1f\x7f]")
_COOKIE_ESCAPE_BYTES_RE = _lazy_regex(rb"(?s)\\([0-3][0-7]{2}|.)")
_COOKIE_ESCAPE_TEXT_RE = _lazy_regex(r"(?s)\\([0-3][0-7]{2}|.)")


def _parse_cookie(header: str) -> dict[str, str]:
    """Parse a `Cookie` header leniently; a malformed pair is skipped, never an error.

    Pass the header as text (the WSGI value re-encoded as latin-1 and decoded as UTF-8).
    """
    compact = header.replace("; ", ";")
    if " " not in compact and '"' not in compact and header.isprintable():
        # PERF: what browsers send, pairs joined by "; ": nothing to strip, unquote or
        # refuse. setdefault: a repeated name keeps its first value, as below.
        cookies: dict[str, str] = {}
        for pair in compact.split(";"):
            name, sep, value = pair.partition("=")
            if sep and name:
                cookies.setdefault(name, value)
        return cookies
    return _parse_cookie_leniently(header)


def _parse_cookie_leniently(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip(_COOKIE_SPACE)
        # A repeated name keeps its first value: browsers send the cookie with the longest
        # Path first (RFC 6265, 5.4), the one set for this URL. Werkzeug's cookies[name]
        # agrees; Django keeps the last.
        if not sep or not name or name in cookies or (
                not name.isprintable() and _COOKIE_BAD_NAME_RE.search(name)):
            continue
        value = value.strip(_COOKIE_SPACE)
        # PERF: only a quoted value needs unquoting.
        cookies[name] = _unquote_cookie(value) if value[:1] == '"' else value
    return cookies


def _unquote_cookie(value: str) -> str:
    """Remove the double quotes around a cookie value and decode its backslash escapes."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    # Werkzeug escapes each UTF-8 byte ("é" -> \303\251); http.cookies each code point
    # below 256 ("é" -> \351). Read as bytes first; escapes that are not UTF-8 then come
    # from http.cookies. Latin-1 text shaped like UTF-8 ("Ã©") is read the Werkzeug way.
    data = inner.encode("utf-8", "surrogatepass")
    raw = _COOKIE_ESCAPE_BYTES_RE.sub(_unescape_cookie_byte, data)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _COOKIE_ESCAPE_TEXT_RE.sub(_unescape_cookie_char, inner)


def _unescape_cookie_byte(match: re.Match[bytes]) -> bytes:
    escaped = match.group(1)
    return bytes([int(escaped, 8)]) if len(escaped) == 3 else escaped


def _unescape_cookie_char(match: re.Match[str]) -> str:
    escaped = match.group(1)
    return chr(int(escaped, 8)) if len(escaped) == 3 else escaped


# -- parsers: uploaded files

_UPLOAD_MEMORY_SIZE = 1024 * 1024
# C0, DEL and C1: never part of a name a user meant to give.
_FILENAME_CONTROLS: dict[int, None] = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])
# Every character str.isspace() accepts once the controls are gone, and the dot, so that
# "..", "." and " .. " come out empty.
_FILENAME_STRIP = (
    " \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000."
)


def _safe_filename(filename: str) -> str:
    """Reduce a client's file name to a base name: no directories, no control characters."""
    name = filename.translate(_FILENAME_CONTROLS)
    # Both separators: the server's OS does not tell which one the client used.
    name = name[max(name.rfind("/"), name.rfind("\\")) + 1 :]
    return name.strip(_FILENAME_STRIP)


def _spooled_file() -> IO[bytes]:
    import tempfile

    return tempfile.SpooledTemporaryFile(max_size=_UPLOAD_MEMORY_SIZE)


class UploadedFile:
    """A file sent in a multipart form: kept in memory up to 1 MiB, in a temporary file past it.

    `name` is the form field's name, `filename` the client's file name reduced to a base
    name (it may be ""). `file` is positioned at 0 after parsing.
    """

    def __init__(self, name: str, filename: str,
                 content_type: str = "application/octet-stream", charset: str | None = None,
                 file: IO[bytes] | None = None) -> None:
        self.name = name
        self.filename = _safe_filename(filename)
        self.content_type = content_type
        self.charset = charset
        self.file: IO[bytes] = _spooled_file() if file is None else file
        self.size = 0
        if file is not None:
            self.size = file.seek(0, os.SEEK_END)
            file.seek(0)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def chunks(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """The whole content from its start, in pieces of at most `chunk_size` bytes."""
        self.file.seek(0)
        while chunk := self.file.read(chunk_size):
            yield chunk

    def save(self, destination: str | os.PathLike[str] | IO[bytes],
             chunk_size: int = 64 * 1024) -> None:
        """Copy the whole content to a path (overwritten) or a binary file; rewinds to 0."""
        if isinstance(destination, (str, os.PathLike)):
            with open(destination, "wb") as out:
                self._copy_to(out, chunk_size)
        else:
            self._copy_to(destination, chunk_size)

    def _copy_to(self, out: IO[bytes], chunk_size: int) -> None:
        for chunk in self.chunks(chunk_size):
            out.write(chunk)
        self.file.seek(0)

    @property
    def closed(self) -> bool:
        return self.file.closed

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> UploadedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<UploadedFile {self.name!r}: {self.filename!r} "
                f"({self.content_type}, {self.size} bytes)>")


# -- parsers: multipart/form-data

_MULTIPART_MAX_HEADER_BYTES = 8 * 1024
_MULTIPART_MAX_HEADER_LINES = 32
_MULTIPART_MAX_PREAMBLE = 64 * 1024
_MULTIPART_MAX_EPILOGUE = 64 * 1024
# RFC 2046 5.1.1: 1 to 70 of these characters, the last one not a space.
_BOUNDARY_RE = _lazy_regex(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_HEADER_VALUE_BAD_RE = _lazy_regex(r"[\x00\r\n]")
_TRUNCATED = "Multipart body ends before its closing boundary."
# Codecs that are not character sets a form may use, or are slow or unsafe to decode.
_REFUSED_CHARSETS = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "utf-7", "undefined"}
)


def _check_boundary(boundary: str) -> bytes:
    """The boundary of a multipart Content-Type as bytes; BadRequest if RFC 2046 refuses it."""
    if not 0 < len(boundary) <= 70 or not _BOUNDARY_RE.fullmatch(boundary):
        raise BadRequest("Invalid multipart boundary.")
    return boundary.encode("ascii")


def _parse_multipart(read: Callable[[int], bytes], boundary: bytes, *, max_fields: int,
                     encoding: str = "utf-8", chunk_size: int = 64 * 1024,
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, UploadedFile]]]:
    """Parse a multipart/form-data body into (fields, files), streaming.

    `read(n)` returns at most n bytes and b"" at the end; it is not called again after
    that. Errors it raises (413, 400) propagate. An empty body is an empty form. Any other
    malformed or over-limit body is a BadRequest; the files made so far are then closed.
    """
    parser = _MultipartParser(read, boundary, max_fields=max_fields, encoding=encoding,
                              chunk_size=chunk_size)
    return parser.parse()


class _MultipartParser:
    """One pass over a multipart body. It holds about chunk_size + len(delimiter) bytes
    of a part's content at a time, and examines each byte once, plus at most one
    delimiter's length again per chunk read."""

    def __init__(self, read: Callable[[int], bytes], boundary: bytes, *, max_fields: int,
                 encoding: str, chunk_size: int) -> None:
        self._read = read
        self._delimiter = b"\r\n--" + boundary
        self._max_fields = max_fields
        self._encoding = encoding
        self._chunk_size = max(1, chunk_size)
        # The first delimiter may open the body with no CRLF before it: a virtual CRLF
        # lets one pattern find every delimiter.
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self.fields: list[tuple[str, str]] = []
        self.files: list[tuple[str, UploadedFile]] = []

    def parse(self) -> tuple[list[tuple[str, str]], list[tuple[str, UploadedFile]]]:
        try:
            if not self._fill():
                return self.fields, self.files
            self._skip_preamble()
            parts = 0
            while self._next_is_part():
                parts += 1
                if parts > self._max_fields:
                    raise BadRequest(f"Too many form fields: more than {self._max_fields}.")
                self._read_part()
            self._discard_epilogue()
        except BaseException:
            for _, upload in self.files:
                upload.close()
            raise
        return self.fields, self.files

    def _fill(self) -> bool:
        """Append the next chunk to the buffer; False at the end of the body."""
        if self._eof:
            return False
        data = self._read(self._chunk_size)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _find(self, needle: bytes, start: int) -> int:
        # Every search goes through here: the tests count the bytes it examines.
        return self._buf.find(needle, start)

    def _copy_until_delimiter(self, sink: Callable[[bytes], object], at_end: str) -> None:
        """Pass the bytes before the next delimiter to `sink` and consume the delimiter."""
        delimiter = self._delimiter
        keep = len(delimiter) - 1
        while True:
            # What is left from the last round is shorter than the delimiter: each byte is
            # examined once, plus at most len(delimiter) bytes per chunk read.
            found = self._find(delimiter, 0)
            if found >= 0:
                if found:
                    sink(bytes(self._buf[:found]))
                del self._buf[: found + len(delimiter)]
                return
            # All but a tail that may begin a delimiter is content.
            safe = len(self._buf) - keep
            if safe > 0:
                sink(bytes(self._buf[:safe]))
                del self._buf[:safe]
            if not self._fill():
                raise BadRequest(at_end)

    def _skip_preamble(self) -> None:
        size = -2  # the virtual CRLF
        dash_boundary = self._delimiter[2:]
        tail = b""   # the preamble's last bytes, where a boundary may begin

        def discard(data: bytes) -> None:
            nonlocal size, tail
            size += len(data)
            if size > _MULTIPART_MAX_PREAMBLE:
                raise BadRequest("Multipart preamble too large.")
            # A boundary after a bare LF or CR is no delimiter here (RFC 2046 wants CRLF) but
            # is one to lenient parsers: read as preamble, the parts would silently vanish.
            window = tail + data
            if b"\n" + dash_boundary in window or b"\r" + dash_boundary in window:
                raise BadRequest("Multipart boundary after a bare line break (CRLF expected).")
            tail = window[-len(dash_boundary):]

        self._copy_until_delimiter(discard, "No multipart boundary found in the body.")

    def _next_is_part(self) -> bool:
        """After a delimiter: True when a part follows, False (consumed) at `--`, the end."""
        while len(self._buf) < 2:
            if not self._fill():
                raise BadRequest(_TRUNCATED)
        if self._buf[:2] == b"--":
            del self._buf[:2]
            return False
        return True

    def _discard_epilogue(self) -> None:
        # Read to the end, so the whole body is consumed, but no further than the limit.
        size = len(self._buf)
        self._buf.clear()
        while size <= _MULTIPART_MAX_EPILOGUE and self._fill():
            size += len(self._buf)
            self._buf.clear()
        if size > _MULTIPART_MAX_EPILOGUE:
            raise BadRequest("Multipart epilogue too large.")

    def _read_part(self) -> None:
        name, filename, content_type, params = _part_info(self._read_header_block())
        if filename is None:
            data = bytearray()
            self._copy_body(data.extend)
            text = _decode_text(bytes(data), params.get("charset"), self._encoding)
            self.fields.append((name, text))
            return
        upload = UploadedFile(name, filename, content_type or "application/octet-stream",
                              params.get("charset"))
        self.files.append((name, upload))
        self._copy_body(upload.file.write)
        upload.size = upload.file.tell()
        upload.file.seek(0)
        if not upload.filename and not upload.size:
            # "No file chosen" in a browser: an empty part with filename="".
            self.files.pop()
            upload.close()

    def _read_header_block(self) -> bytes:
        """The bytes from the end of the delimiter to the blank line (the rest of the
        delimiter line, then the header lines)."""
        start = 0
        while (found := self._find(b"\r\n\r\n", start)) < 0:
            # The blank line can only begin in the last 3 bytes: the block is that long.
            start = max(0, len(self._buf) - 3)
            if start > _MULTIPART_MAX_HEADER_BYTES:
                raise BadRequest("Multipart part headers too large.")
            if not self._fill():
                raise BadRequest(_TRUNCATED)
        if found > _MULTIPART_MAX_HEADER_BYTES:
            raise BadRequest("Multipart part headers too large.")
        block = bytes(self._buf[:found])
        # Leave the blank line's CRLF: it may also be the start of the next delimiter,
        # when a part has no body at all (RFC 2046's body-part is optional).
        del self._buf[: found + 2]
        return block

    def _copy_body(self, sink: Callable[[bytes], object]) -> None:
        delimiter = self._delimiter
        while len(self._buf) < len(delimiter) and self._fill():
            pass
        if self._buf.startswith(delimiter):
            del self._buf[: len(delimiter)]
            return
        del self._buf[:2]
        self._copy_until_delimiter(sink, _TRUNCATED)


def _part_info(block: bytes) -> tuple[str, str | None, str, dict[str, str]]:
    """(field name, file name or None, content type, its parameters) of a part."""
    headers = _parse_part_headers(block)
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise BadRequest("Multipart part without a Content-Disposition header.")
    kind, params = _parse_options_header(disposition)
    name = params.get("name")
    if kind != "form-data" or name is None:
        raise BadRequest("Multipart part is not form-data with a name.")
    # `filename*` stays ignored, as RFC 7578 4.2 requires.
    content_type, content_params = _parse_options_header(headers.get("content-type", ""))
    filename = params.get("filename")
    return (_browser_unescape(name), None if filename is None else _browser_unescape(filename),
            content_type, content_params)


def _browser_unescape(text: str) -> str:
    """Undo the HTML Standard's escapes in a multipart name or filename: browsers send `"`,
    CR and LF as %22, %0D and %0A (and a backslash as is, kept here as sent)."""
    if "%" not in text:
        return text
    # A replacement yields `"`, CR or LF, which no escape contains: the order is safe.
    return text.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _parse_part_headers(block: bytes) -> dict[str, str]:
    """The headers of a part, names lowercased; BadRequest when malformed or too many."""
    padding, *lines = block.split(b"\r\n")
    if padding.strip(b" \t"):
        raise BadRequest("Malformed multipart boundary line.")
    if len(lines) > _MULTIPART_MAX_HEADER_LINES:
        raise BadRequest("Too many multipart part header lines.")
    headers: dict[str, str] = {}
    for raw in lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        name, colon, value = line.partition(":")
        name = name.lower()
        if not colon or not _TOKEN_RE.fullmatch(name) or _HEADER_VALUE_BAD_RE.search(value):
            raise BadRequest("Malformed multipart part header.")
        if name in headers and name in ("content-disposition", "content-type"):
            # Two of them could be read differently by a proxy and by the application.
            raise BadRequest(f"Repeated {name} header in a multipart part.")
        headers[name] = value.strip(" \t")
    return headers


def _decode_text(data: bytes, charset: str | None, fallback: str) -> str:
    """Decode a text field with its part's charset, else `fallback`, else UTF-8."""
    for candidate in (charset, fallback):
        if candidate and _is_form_charset(candidate):
            try:
                return data.decode(candidate, "replace")
            except UnicodeError:
                continue
    return data.decode("utf-8", "replace")


def _is_form_charset(name: str) -> bool:
    import codecs

    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return False
    # Not bytes-to-bytes codecs such as base64 (the flag is private but stable since 3.4).
    text_codec = getattr(info, "_is_text_encoding", True)
    return bool(text_codec) and info.name not in _REFUSED_CHARSETS


if TYPE_CHECKING:  # checkers see each property's own type (request.GET is a QueryDict)
    from functools import cached_property as _lazy
else:
    class _lazy:  # noqa: N801 (a decorator, named like functools.cached_property)
        """A cached property for the hot path: computed on first access, then an attribute.

        PERF: a non-data descriptor, so after the first access the instance's __dict__ wins
        and reading the value costs a dict lookup (cached_property takes a lock on 3.11).
        """

        def __init__(self, func: Callable[[Any], Any]) -> None:
            self.func = func
            self.name = func.__name__
            self.__doc__ = func.__doc__

        def __get__(self, obj: Any, cls: Any = None) -> Any:
            if obj is None:
                return self
            value = self.func(obj)
            # PERF: setattr, not obj.__dict__[...]: reading __dict__ turns the instance's
            # inline attribute values into a dict object.
            setattr(obj, self.name, value)
            return value


class LimitedStream:
    """`wsgi.input` bounded by Content-Length, never read past it.

    `limit` is the number of bytes the client announced, or None to read to EOF (a server
    that sets `wsgi.input_terminated`). More than `max_size` bytes is a 413, raised as soon
    as it is known; an error from the server's stream (a client gone) is a 400.
    """

    def __init__(self, stream: Any, limit: int | None, max_size: int | None = None) -> None:
        self._stream = stream
        self._remaining = limit
        self._max_size = max_size
        self._read = 0

    def _account(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._remaining is not None:
            self._remaining -= len(data)
        if self._max_size is not None and self._read > self._max_size:
            raise RequestDataTooBig(f"Request body is larger than {self._max_size} bytes")
        return data

    def _size_to_read(self, size: int) -> int:
        if self._remaining is None:
            return size if size >= 0 else 65536
        return self._remaining if size < 0 else min(size, self._remaining)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self._read_all()
        wanted = self._size_to_read(size)
        if wanted <= 0:
            return b""
        try:
            data = self._stream.read(wanted)
        except HttpError:
            raise
        except Exception as exc:
            # OSError from a socket, but gunicorn's bad-chunk errors are plain Exceptions.
            raise BadRequest("The request body could not be read (client gone?)") from exc
        if self._remaining is not None and len(data) == 0:
            raise BadRequest("The request body is shorter than its Content-Length")
        return self._account(data)

    def _read_all(self) -> bytes:
        parts = []
        # With a known length, one read usually brings it all.
        while chunk := self.read(65536 if self._remaining is None else self._remaining):
            parts.append(chunk)
            if self._remaining is not None and self._remaining <= 0:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int = -1) -> bytes:
        wanted = self._size_to_read(size if size is not None and size >= 0 else 65536)
        if wanted <= 0:
            return b""
        try:
            data = self._stream.readline(wanted)
        except HttpError:
            raise
        except Exception as exc:
            raise BadRequest("The request body could not be read (client gone?)") from exc
        return self._account(data)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def tell(self) -> int:
        """How many bytes were read so far."""
        return self._read

    def exhausted(self) -> bool:
        return self._remaining is not None and self._remaining <= 0


# What quote() leaves alone in a path: RFC 3986 pchar and "/".
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# What quote() leaves alone in a whole URI (Django's iri_to_uri): reserved characters and "%".
_URI_SAFE = "/#%[]=:;$&()+,!?*@'~"
# Django's host grammar (django.http.request.host_validation_re) with a domain name's
# labels spelled out: a domain name or IPv4 address (no empty label, one optional trailing
# dot) or a bracketed IPv6 literal, then an optional port. Labels are separated by a
# required dot, so matching is linear.
_HOST_SYNTAX = _lazy_regex(
    r"((?:[a-z0-9-]+\.)*[a-z0-9-]+\.?|\[[a-f0-9]*:[a-f0-9.:]+\])(?::[0-9]{1,5})?")
_MISSING: Any = object()
_CAPITALISED_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


def _host_is_allowed(domain: str, allowed_hosts: Iterable[str]) -> bool:
    """`example.com` matches itself, `.example.com` it and its subdomains, `*` anything."""
    domain = domain.rstrip(".")
    for pattern in allowed_hosts:  # lowercased once, by App
        if pattern == "*" or pattern == domain:
            return True
        if pattern.startswith(".") and (domain.endswith(pattern) or domain == pattern[1:]):
            return True
    return False


_DOT_SEGMENT = _lazy_regex(r"(?:^|/)\.\.?(?:/|$)")
_FORM_FIELD = _lazy_regex(rb"[^&]+")
_UTF_LABELS = frozenset({"utf-8", "utf8", "utf-16", "utf-16le", "utf-16be", "utf-32",
                         "utf-32le", "utf-32be"})


_SURROGATE_ESCAPE = _lazy_regex(r"\\u[dD][89a-fA-F]")
# First bytes of a JSON text that can only be UTF-8 (json.detect_encoding's answer): no BOM
# (EF, FE, FF) and no zero byte, which UTF-16 and UTF-32 have in their first two bytes.
_JSON_UTF8_STARTS = frozenset(bytes((byte,)) for byte in b"{[\"-0123456789tfn \t\r\n")


def _holds_lone_surrogate(data: Any) -> bool:
    import json
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_json_constant(name: str) -> Any:
    raise BadRequest(f"Invalid JSON body: {name} is not JSON (RFC 8259)")


_json_decoder: Any = None


def _strict_json_decoder() -> Any:
    """One decoder for every request (json.loads with options builds one per call) that
    refuses NaN and Infinity, which RFC 8259 does not allow."""
    global _json_decoder
    if _json_decoder is None:
        import json
        _json_decoder = json.JSONDecoder(parse_constant=_refuse_json_constant)
    return _json_decoder


def _parse_json_text(text: str) -> Any:
    """A request's JSON text as data; what is not JSON, or holds a lone surrogate, is a 400."""
    decoder = _json_decoder or _strict_json_decoder()
    try:
        # PERF: scan_once is what decode() runs, without its two whitespace matches and
        # two frames (7% of a 1 KB echo). Text it does not take whole (leading or
        # trailing whitespace, extra data, no value) goes through decode(), which
        # answers it, or words its error, as it always did.
        try:
            data, end = decoder.scan_once(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            data = decoder.decode(text)
    except ValueError as exc:  # JSONDecodeError, or an int past the digit limit
        from json import JSONDecodeError
        # Only the position: the message never repeats what the client sent.
        where = (f": {exc.msg} at line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, JSONDecodeError) else "")
        raise BadRequest(f"Invalid JSON body{where}") from None
    except RecursionError:
        raise BadRequest("Invalid JSON body: nested too deeply") from None
    # A "\ud800" escape decodes to a lone surrogate, which no response can carry.
    # PERF: "\\" is looked for with memchr, "\\u" character by character (4% of the echo).
    if ("\\" in text and "\\u" in text and _SURROGATE_ESCAPE.search(text)
            and _holds_lone_surrogate(data)):
        raise BadRequest("Invalid JSON body: a lone surrogate is not text")
    return data


class Request:
    """One HTTP request; the parsed parts (GET, POST, FILES, COOKIES, body, json...) are
    computed on first use and cached."""

    # Used when a Request is built without an App (in a script or a test).
    default_max_body_size = 10 * 2**20
    default_max_form_fields = 1000

    _files_to_close: Sequence[Any] = ()
    _encoding: str | None = None  # set by the `encoding` setter
    _stream: LimitedStream | None = None  # made by `stream`
    _route_found: tuple[Route, tuple[Any, ...], dict[str, Any]]
    session: _Session  # set by SessionMiddleware

    def __init__(self, environ: dict[str, Any], app: App | None = None) -> None:
        self.environ = self.META = environ
        self.app = app
        method = environ.get("REQUEST_METHOD", "GET")
        # PERF: a method already in capitals is kept: upper() makes a new string.
        self.method: str = method if method in _CAPITALISED_METHODS else method.upper()
        path = environ.get("PATH_INFO") or "/"
        if path.isascii():  # PERF: the usual path needs no decoding, so no lazy step
            self.path_info = path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.environ.get('PATH_INFO', '')!r}>"

    @property
    def resolver_match(self) -> ResolverMatch | None:
        """What the resolver found for this request (None before routing)."""
        # PERF: built on first use from the (route, args, kwargs) the resolver left.
        found = self.__dict__.get("_resolver_match")
        if found is None:
            route_found = self.__dict__.get("_route_found")
            if route_found is None:
                return None
            item, args, kwargs = route_found
            found = ResolverMatch(item.view, args, kwargs, item.name, item.pattern)
            self.__dict__["_resolver_match"] = found
        return found

    @resolver_match.setter
    def resolver_match(self, value: ResolverMatch | None) -> None:
        self.__dict__["_resolver_match"] = value

    # -- the URL
    @_lazy
    def path_info(self) -> str:
        """The path below SCRIPT_NAME, as UTF-8 text (PEP 3333 hands it over as latin-1)."""
        raw = self.environ.get("PATH_INFO") or "/"  # ASCII paths were set by __init__
        try:
            return raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise BadRequest("The request path is not valid UTF-8") from None

    @_lazy
    def script_name(self) -> str:
        raw: str = self.environ.get("SCRIPT_NAME", "")
        try:
            return raw.encode("latin-1").decode("utf-8").rstrip("/")
        except UnicodeError:
            raise BadRequest("SCRIPT_NAME is not valid UTF-8") from None

    @_lazy
    def path(self) -> str:
        return self.script_name + self.path_info

    @property
    def query_string(self) -> str:
        query: str = self.environ.get("QUERY_STRING", "")
        return query

    @property
    def scheme(self) -> str:
        scheme: str = self.environ.get("wsgi.url_scheme", "http")
        return scheme

    @property
    def is_secure(self) -> bool:
        return self.scheme == "https"

    @_lazy
    def host(self) -> str:
        """The Host header (or SERVER_NAME), checked for syntax and against allowed_hosts."""
        environ = self.environ
        host = environ.get("HTTP_HOST")
        if not host:
            host = environ.get("SERVER_NAME", "")
            port = environ.get("SERVER_PORT", "")
            if port and port != ("443" if self.is_secure else "80"):
                host = f"{host}:{port}"
        # isascii first: lower() maps some non-ASCII letters (the Kelvin sign) to ASCII ones.
        host = host.lower() if host.isascii() else ""
        match = _HOST_SYNTAX.fullmatch(host)
        if match is None:
            raise BadRequest("Invalid Host header")
        allowed = self.app.allowed_hosts if self.app is not None else None
        if allowed is not None and not _host_is_allowed(match.group(1), allowed):
            raise BadRequest("The Host header is not in allowed_hosts")
        return host

    def build_absolute_uri(self, location: str | None = None) -> str:
        """An absolute URL for `location`, by Django's rules: an absolute URL is returned as
        it is, anything else is joined to this request's URL. Without `location`, this
        request's path and query, on its own host even when the path starts with "//"."""
        origin = f"{self.scheme}://{self.host}"
        path = quote(self.path, safe=_PATH_SAFE)
        if location is None:
            # Never joined: urljoin would read a path "//evil.example/x" as a host.
            query = self.query_string
            if not query:
                return origin + path
            # PEP 3333 hands the query's bytes over as latin-1: quote those bytes.
            return f"{origin}{path}?{quote(query, _URI_SAFE, 'latin-1', 'replace')}"
        parts = urlsplit(location)
        if not (parts.scheme and parts.netloc):
            if (parts.path.startswith("/") and not parts.scheme and not parts.netloc
                    and not _DOT_SEGMENT.search(parts.path)):
                # A rooted path ("///x" too: no host in it) needs no join.
                location = origin + location.removeprefix("//")
            else:
                from urllib.parse import urljoin
                location = urljoin(origin + path, location)
        return quote(location, safe=_URI_SAFE)

    # -- headers
    @_lazy
    def headers(self) -> Headers:
        return Headers(self.environ)

    def _raw_content_type(self) -> str:
        """The Content-Type header as sent ("" when absent)."""
        value: str = self.environ.get("CONTENT_TYPE", "")
        return value

    @_lazy
    def _content_type_parts(self) -> tuple[str, dict[str, str]]:
        return _parse_options_header(self._raw_content_type())

    @property
    def content_type(self) -> str:
        return self._content_type_parts[0]

    @property
    def content_params(self) -> dict[str, str]:
        return self._content_type_parts[1]

    @property
    def encoding(self) -> str:
        """The charset forms are decoded with: the one set on the request, else the body's
        charset when it is a text encoding, else UTF-8."""
        if self._encoding is not None:
            return self._encoding
        charset = self.content_params.get("charset", "utf-8")
        return charset if _is_form_charset(charset) else "utf-8"

    @encoding.setter
    def encoding(self, value: str) -> None:
        """As Django: the next access to GET and POST decodes them again, with `value`."""
        self._encoding = value
        self.__dict__.pop("GET", None)
        self.__dict__.pop("POST", None)

    @_lazy
    def content_length(self) -> int | None:
        """The announced body size; None when absent. Malformed or negative: 400."""
        raw = self.environ.get("CONTENT_LENGTH", "")
        if raw and raw.isdigit() and raw.isascii() and len(raw) <= 18:
            return int(raw)  # PERF: the usual value, with nothing to strip
        raw = "" if raw is None else raw.strip(" \t")
        if not raw:
            return None
        if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
            raise BadRequest("Malformed Content-Length header")
        return int(raw)

    # -- the body
    @property
    def _max_body_size(self) -> int:
        return self.app.max_body_size if self.app is not None else self.default_max_body_size

    @property
    def _max_form_fields(self) -> int:
        app = self.app
        return app.max_form_fields if app is not None else self.default_max_form_fields

    @property
    def stream(self) -> LimitedStream:
        """The body as a stream, bounded by Content-Length and by max_body_size."""
        # PERF: kept in _stream, whose class default says "none yet" without the instance's
        # __dict__ (reading it turns the inline attributes into a dict).
        stream = self._stream
        if stream is None:
            stream = self._stream = self._open_stream()
        return stream

    @stream.setter
    def stream(self, value: LimitedStream) -> None:
        self._stream = value

    @stream.deleter
    def stream(self) -> None:
        if self._stream is None:  # as deleting an attribute never set
            raise AttributeError("stream")
        self._stream = None

    def _open_stream(self) -> LimitedStream:
        body = self.__dict__.get("body")
        if body is not None:
            return LimitedStream(io.BytesIO(body), len(body))
        max_size = self._max_body_size
        length = self.content_length
        if length is not None and length > max_size:
            raise RequestDataTooBig(f"Request body is larger than {max_size} bytes")
        source = self.environ.get("wsgi.input")
        if length is None:
            # PEP 3333: without Content-Length the body is empty, unless the server has
            # de-chunked it and says so with wsgi.input_terminated.
            if source is None or not self.environ.get("wsgi.input_terminated"):
                return LimitedStream(io.BytesIO(), 0)
            return LimitedStream(source, None, max_size)
        return LimitedStream(source if source is not None else io.BytesIO(), length, max_size)

    @_lazy
    def body(self) -> bytes:
        """The whole body; afterwards `stream` reads it again, from memory."""
        if self._stream is None:
            at_once = self._read_body_at_once()
            if at_once is not None:
                return at_once
        self._refuse_if_streamed("request.body")
        data: bytes = self.stream.read()
        # `stream` reads it again from memory: built when asked for (see `stream`).
        self._stream = None
        return data

    def _read_body_at_once(self) -> bytes | None:
        """A body of known length within max_body_size, in one read of the server's stream
        (a short read goes on through a LimitedStream); None for the other bodies, which
        `stream` bounds. PERF: without the stream object, a third of a JSON body's cost."""
        environ = self.environ
        raw = environ.get("CONTENT_LENGTH")
        # PERF: the usual value (content_length's own fast case) without its lazy step.
        length = (int(raw) if raw and raw.isdigit() and raw.isascii() and len(raw) <= 18
                  else self.content_length)
        source = environ.get("wsgi.input")
        app = self.app
        if length is None or source is None or length > (
                app.max_body_size if app is not None else self.default_max_body_size):
            return None
        if length == 0:
            return b""
        try:
            data: bytes = source.read(length)
        except HttpError:
            raise
        except Exception as exc:  # as LimitedStream.read: a client gone is a 400
            raise BadRequest("The request body could not be read (client gone?)") from exc
        if len(data) == length:
            return data
        if len(data) > length:  # more than asked for is a server's bug: not the body's
            return data[:length]
        return data + LimitedStream(source, length - len(data)).read()

    def _refuse_if_streamed(self, what: str) -> None:
        """RawPostDataException when bytes were taken from the server's stream other than
        by `body`: what is left of it is not the body (Django's rule)."""
        stream = self._stream
        if stream is None or not stream.tell() or "body" in self.__dict__:
            return
        if self.__dict__.get("_body_streamed"):
            raise RawPostDataException(
                f"{what} cannot be read: POST and FILES were parsed from the multipart "
                "stream, which is not kept in memory. Read request.body first, and set "
                "request.encoding before reading POST")
        raise RawPostDataException(
            f"{what} cannot be read after part of the body was read from request.stream; "
            f"read {what} first (request.stream then reads the body again, from memory)")

    @_lazy
    def json(self) -> Any:
        """The body decoded as JSON (RFC 8259); a wrong content type or bad JSON is a 400."""
        charset = None
        if self._raw_content_type() != "application/json":  # PERF: that one unparsed
            content_type = self.content_type
            if content_type != "application/json" and not content_type.endswith("+json"):
                raise BadRequest("Expected a JSON body (Content-Type: application/json)")
            charset = self.content_params.get("charset")
        if self._stream is not None:  # PERF: no call when no stream was made
            self._refuse_if_streamed("request.json")
        body = self.body
        # RFC 8259: UTF-8, or UTF-16/32 told by the first bytes. Decoded strictly here:
        # json.loads(bytes) would accept encoded lone surrogates.
        if charset is None and body[:1] in _JSON_UTF8_STARTS and body[1:2] != b"\0":
            charset = "utf-8"  # PERF: no BOM and no zero byte: what detect_encoding says
        elif charset is None or charset.lower() in _UTF_LABELS:
            # A UTF label says nothing of byte order or BOM: the first bytes do.
            from json import detect_encoding
            charset = detect_encoding(body)
        elif not _is_form_charset(charset):  # punycode and idna decode in quadratic time
            raise BadRequest("The JSON body's charset is not a text encoding")
        try:
            text = body.decode(charset)
        except (ValueError, LookupError):
            raise BadRequest("The JSON body does not decode with its charset") from None
        return _parse_json_text(text)

    # -- query, forms and cookies
    @_lazy
    def GET(self) -> QueryDict:
        # UTF-8 (RFC 3986) unless request.encoding was set: unlike Django, the body's
        # charset is not applied to the URL (a UTF-16 JSON body would garble the query).
        query = self.environ.get("QUERY_STRING", "")
        if self._encoding is None and type(query) is str:
            lists = _split_plain_query(query)
            if lists is not None:
                # PERF: QueryDict's own shortcut, without the class call and __init__.
                parsed: QueryDict = object.__new__(QueryDict)
                parsed._lists = lists
                parsed._mutable = False
                return parsed
        return QueryDict(query, encoding=self._encoding or "utf-8")

    @_lazy
    def COOKIES(self) -> dict[str, str]:
        raw = self.environ.get("HTTP_COOKIE", "")
        if not raw.isascii():  # PEP 3333 hands header bytes over as latin-1
            raw = raw.encode("latin-1", "replace").decode("utf-8", "replace")
        return _parse_cookie(raw)

    @_lazy
    def POST(self) -> QueryDict:
        self._load_post_and_files()
        post: QueryDict = self.__dict__["POST"]
        return post

    @_lazy
    def FILES(self) -> MultiDict:
        self._load_post_and_files()
        files: MultiDict = self.__dict__["FILES"]
        return files

    def _load_post_and_files(self) -> None:
        """Parse a form for POST requests only, as Django: other methods read request.body
        or request.json."""
        fields: list[tuple[str, Any]] = []
        files: list[tuple[str, Any]] = []
        if self.method == "POST":
            content_type = self.content_type
            if content_type == "application/x-www-form-urlencoded":
                fields = self._parse_urlencoded()
            elif content_type == "multipart/form-data":
                fields, files = self._read_multipart()
        self.__dict__["POST"] = QueryDict(fields)
        self.__dict__["FILES"] = MultiDict(files)

    def _parse_urlencoded(self) -> list[tuple[str, Any]]:
        self._refuse_if_streamed("request.POST")
        body = self.body
        limit = self._max_form_fields
        # Empty fields ("a=1&&") do not count; the scan stops one past the limit.
        if body.count(b"&") >= limit and sum(
                1 for _ in zip(range(limit + 1), _FORM_FIELD.finditer(body), strict=False)) > limit:
            raise BadRequest(f"Too many form fields (more than {limit})")
        return parse_query_string(body, self.encoding)

    def _read_multipart(self) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        boundary = _check_boundary(self.content_params.get("boundary", ""))
        if "body" in self.__dict__:
            read: Callable[[int], bytes] = io.BytesIO(self.__dict__["body"]).read
        else:
            self._refuse_if_streamed("request.POST/FILES")
            # PERF: uploads go from the stream to their files, never all held in memory.
            self.__dict__["_body_streamed"] = True
            read = self.stream.read
        fields, files = _parse_multipart(read, boundary, max_fields=self._max_form_fields,
                                         encoding=self.encoding)
        self._files_to_close = [*self._files_to_close, *(upload for _, upload in files)]
        return fields, files

    if TYPE_CHECKING:  # the value is text; with a default, that default's type too
        @overload
        def get_signed_cookie(self, key: str, *, max_age: float | None = None) -> str: ...
        @overload
        def get_signed_cookie(self, key: str, default: _T,
                              max_age: float | None = None) -> str | _T: ...

    def get_signed_cookie(self, key: str, default: Any = _MISSING,
                          max_age: float | None = None) -> Any:
        """The value of a cookie set with `set_signed_cookie`; tampered, expired or missing:
        `default` when given, else a 400."""
        raw = self.COOKIES.get(key)
        secret = _secret_key_of(self.app)
        value = None if raw is None else _unsign_cookie(secret, key, raw, max_age)
        if value is None:
            if default is not _MISSING:
                return default
            raise BadRequest(f"Signed cookie {key!r} is missing, tampered with or expired")
        return value

    @property
    def db(self) -> Any:
        """This request's DB-API connection from `App(database=...)`: opened on first use
        from a per-thread pool, given back when the response closes (see "databases")."""
        lease = self.__dict__.get("_db_lease") or _lease_connection(self)
        return lease.connection

    @_lazy
    def scope(self) -> dict[str, Any] | None:
        """The ASGI scope the request came with; None under WSGI."""
        scope: dict[str, Any] | None = self.environ.get("asgi.scope")
        return scope

    def _set_input(self, body: bytes | IO[bytes], size: int) -> None:
        """Make `body`, which the ASGI handler received whole, the server's input."""
        _put_input(self.environ, body, size)

    def close(self) -> None:
        """Close the uploaded files' temporary files and give `db` back to its pool (called
        when the response closes)."""
        files, self._files_to_close = self._files_to_close, ()
        for upload in files:
            upload.close()


# ---------------------------------------------------------------- responses

def _reason_phrase(status: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


_current_request: ContextVar[Request | None] = ContextVar("microhandler_request", default=None)


def _secret_key_of(app: App | None) -> bytes:
    if app is None:
        request = _current_request.get()
        app = request.app if request is not None else None
    if app is None or not app.secret_key:
        raise ImproperlyConfigured("Signed cookies need a secret: App(secret_key='...')")
    key = app.secret_key
    return key.encode() if isinstance(key, str) else key


def _cookie_signature(secret: bytes, name: str, value: str, timestamp: str) -> str:
    import base64
    import hashlib
    import hmac
    # The name is signed too, so a value signed for one cookie is refused under another.
    message = f"{name}\x00{value}\x00{timestamp}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _sign_cookie(secret: bytes, name: str, value: str) -> str:
    import time
    timestamp = format(int(time.time()), "x")
    return f"{value}:{timestamp}:{_cookie_signature(secret, name, value, timestamp)}"


def _unsign_cookie(secret: bytes, name: str, signed: str, max_age: float | None) -> str | None:
    import hmac
    import time
    parts = signed.rsplit(":", 2)
    if len(parts) != 3:
        return None
    value, timestamp, signature = parts
    expected = _cookie_signature(secret, name, value, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return None
    if max_age is not None:
        try:
            age = time.time() - int(timestamp, 16)
        except ValueError:
            return None
        if age > max_age:
            return None
    return value


_DEFAULT_CONTENT_TYPE = ("Content-Type", "text/html; charset=utf-8")
_JSON_CONTENT_TYPE = ("Content-Type", "application/json")
_CHARSET_PARAM = _lazy_regex(r"(?i)charset=\"?([\w.:-]+)")


def _charset_of(content_type: str) -> str:
    """The charset a Content-Type value names, else UTF-8."""
    match = _CHARSET_PARAM.search(content_type)
    return match.group(1) if match else "utf-8"


class HttpResponse:
    """A response with its body in memory. Headers are set like a dict: `r["X-A"] = "1"`."""

    streaming = False
    is_async = False  # a streaming body that is an async iterator
    # A class attribute, so the handler's "does it need rendering?" test costs no exception.
    render: Any = None
    is_rendered = True
    # PERF: defaults live on the class; an instance sets only what differs.
    _reason_phrase: str | None = None
    _charset: str | None = None
    _closed = False
    _logged = False  # set on a response whose error was logged already
    _resource_closers: Sequence[Callable[[], Any]] = ()
    _cookies: SimpleCookie | None = None  # PERF: tested without touching __dict__

    def __init__(self, content: Any = b"", status: int = 200, content_type: str | None = None,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 charset: str | None = None) -> None:
        self.status_code = status
        if content_type is None and charset is None and not headers and type(content) in (
                bytes, str):
            # PERF: the common case (a view returned text) skips header validation of
            # constants and the charset lookup.
            self._headers: dict[str, tuple[str, str]] = {"content-type": _DEFAULT_CONTENT_TYPE}
            self._content = content if type(content) is bytes else content.encode()
            return
        self._charset = charset
        self._headers = {}
        if headers:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                self[name] = value
        if content_type is not None:
            self["Content-Type"] = content_type
        elif "content-type" not in self._headers:
            self._headers["content-type"] = ("Content-Type", f"text/html; charset={self.charset}")
        self.content = content

    # -- status
    @property
    def reason_phrase(self) -> str:
        if self._reason_phrase is None:
            return _reason_phrase(self.status_code)
        return self._reason_phrase

    @reason_phrase.setter
    def reason_phrase(self, value: str) -> None:
        self._reason_phrase = check_header("Status", value)[1]

    @property
    def charset(self) -> str:
        if self._charset is not None:
            return self._charset
        content_type = self._headers.get("content-type")
        if content_type and content_type is not _DEFAULT_CONTENT_TYPE:
            return _charset_of(content_type[1])
        return "utf-8"

    @charset.setter
    def charset(self, value: str) -> None:
        self._charset = value

    # -- headers, as a case-insensitive mapping
    def __setitem__(self, name: str, value: Any) -> None:
        value = str(value) if not isinstance(value, str) else value
        check_header(name, value)
        self._headers[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._headers[name.lower()][1]

    def __delitem__(self, name: str) -> None:
        self._headers.pop(name.lower(), None)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._headers

    has_header = __contains__

    def get(self, name: str, default: str | None = None) -> str | None:
        item = self._headers.get(name.lower())
        return item[1] if item is not None else default

    def setdefault(self, name: str, value: str) -> None:
        if name.lower() not in self._headers:
            self[name] = value

    def items(self) -> list[tuple[str, str]]:
        return list(self._headers.values())

    @property
    def headers(self) -> _ResponseHeaders:
        return _ResponseHeaders(self)

    # -- the body
    @property
    def content(self) -> bytes:
        return self._content

    @content.setter
    def content(self, value: Any) -> None:
        if isinstance(value, bytes):
            self._content = value
        elif isinstance(value, str):
            self._content = value.encode(self.charset)
        elif isinstance(value, (bytearray, memoryview)):
            self._content = bytes(value)
        elif hasattr(value, "__iter__"):
            chunks = [self._to_bytes(chunk) for chunk in value]
            if hasattr(value, "close"):
                value.close()
            self._content = b"".join(chunks)
        else:
            self._content = str(value).encode(self.charset)

    def _to_bytes(self, chunk: Any) -> bytes:
        if isinstance(chunk, bytes):
            return chunk
        if isinstance(chunk, str):
            return chunk.encode(self.charset)
        return bytes(chunk) if isinstance(chunk, (bytearray, memoryview)) else str(chunk).encode()

    @property
    def text(self) -> str:
        return self.content.decode(self.charset, "replace")

    def write(self, data: bytes | str) -> None:
        self._content += self._to_bytes(data)

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._content,))

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} status_code={self.status_code}, "
                f"{self.get('Content-Type', '')!r}>")

    # -- cookies
    @property
    def cookies(self) -> SimpleCookie:
        """The cookies to set (Set-Cookie), made on first use."""
        if self._cookies is None:
            from http.cookies import SimpleCookie
            self._cookies = SimpleCookie()
        return self._cookies

    @cookies.setter
    def cookies(self, value: SimpleCookie) -> None:
        self._cookies = value

    def set_cookie(self, key: str, value: str = "", max_age: float | timedelta | None = None,
                   expires: str | datetime | float | None = None,
                   path: str | None = "/", domain: str | None = None, secure: bool = False,
                   httponly: bool = False, samesite: str | None = None) -> None:
        """Set a cookie; `max_age` in seconds (or a timedelta) also sets `expires`."""
        from http.cookies import CookieError, Morsel
        value = str(value)
        if any(c in key + value for c in "\r\n\x00"):
            # Quoting would make them harmless, but a CR or LF here is a bug to report.
            raise BadHeaderError(f"Cookie {key!r} holds CR, LF or NUL")
        morsel: Morsel[str] = Morsel()
        try:
            morsel.set(key, value, _quote_cookie_value(value))
        except CookieError as exc:
            raise BadHeaderError(f"Illegal cookie name {key!r}: {exc}") from None
        self.cookies[key] = morsel
        if max_age is not None:
            seconds = int(max_age.total_seconds() if hasattr(max_age, "total_seconds")
                          else max_age)
            morsel["max-age"] = seconds
            if expires is None:
                expires = _http_date(_now() + seconds)
        if expires is not None:
            morsel["expires"] = _cookie_expires(expires)
        for attribute, setting in (("path", path), ("domain", domain)):
            if setting is not None:
                check_header("Set-Cookie", setting)
                morsel[attribute] = setting
        morsel["secure"] = secure or ""
        morsel["httponly"] = httponly or ""
        if samesite is not None:
            if samesite.lower() not in ("lax", "strict", "none"):
                raise ValueError("samesite must be 'Lax', 'Strict' or 'None'")
            if samesite.lower() == "none" and not secure:
                raise ValueError("samesite='None' needs secure=True (browsers refuse it "
                                 "otherwise)")
            morsel["samesite"] = samesite.capitalize()

    def delete_cookie(self, key: str, path: str = "/", domain: str | None = None,
                      samesite: str | None = None) -> None:
        secure = key.startswith(("__Secure-", "__Host-")) or (samesite or "").lower() == "none"
        self.set_cookie(key, max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path=path,
                        domain=domain, secure=secure, samesite=samesite)

    def set_signed_cookie(self, key: str, value: str, **kwargs: Any) -> None:
        """Set a cookie signed with the App's secret_key (HMAC-SHA256 over name, value and
        time); read it back with `request.get_signed_cookie(key)`."""
        self.set_cookie(key, _sign_cookie(_secret_key_of(None), key, str(value)), **kwargs)

    # -- the WSGI side
    def wsgi_headers(self) -> list[tuple[str, str]]:
        """The header list for start_response, with Content-Length and Set-Cookie."""
        headers = [*self._headers.values()]
        if "content-length" not in self._headers and not self.streaming:
            headers.append(("Content-Length", str(len(self._content))))
        if self._cookies is not None:
            headers.extend(("Set-Cookie", morsel.OutputString())
                           for morsel in self.cookies.values())
        return headers

    def add_closer(self, closer: Callable[[], Any]) -> None:
        """Call `closer` when the server closes the response (a file, an iterator)."""
        self._resource_closers = [*self._resource_closers, closer]

    def close(self) -> None:
        """Release what the response holds and send `request_finished`; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            for closer in self._resource_closers:
                closer()
        finally:
            if request_finished.receivers:
                request_finished.send_robust(sender=type(self))


def _text_response(text: str) -> HttpResponse:
    """`HttpResponse(text)` for the str a view returned. PERF: without __init__'s
    argument checks, a quarter of the response's cost in a hello request."""
    response: HttpResponse = object.__new__(HttpResponse)
    response.status_code = 200
    response._headers = {"content-type": _DEFAULT_CONTENT_TYPE}
    response._content = text.encode()
    return response


class _ResponseHeaders(_HeaderMapping):
    """`response.headers`: the same case-insensitive headers, as a mutable mapping."""

    def __init__(self, response: HttpResponse) -> None:
        self._response = response

    def __getitem__(self, name: str) -> str:
        return self._response[name]

    def __setitem__(self, name: str, value: str) -> None:
        self._response[name] = value

    def __delitem__(self, name: str) -> None:
        del self._response[name]

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._response._headers.values()])

    def __len__(self) -> int:
        return len(self._response._headers)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._response


def _now() -> float:
    import time
    return time.time()


def _http_date(timestamp: float) -> str:
    from email.utils import formatdate
    return formatdate(timestamp, usegmt=True)


def _cookie_expires(expires: Any) -> str:
    if isinstance(expires, str):
        check_header("Set-Cookie", expires)
        return expires
    if hasattr(expires, "timestamp"):  # a datetime; a naive one is UTC, as in Django
        if getattr(expires, "tzinfo", True) is None:
            from datetime import timezone
            expires = expires.replace(tzinfo=timezone.utc)
        return _http_date(expires.timestamp())
    return _http_date(float(expires))


_COOKIE_PLAIN = _lazy_regex(r"[A-Za-z0-9!#$%&'*+\-.^_`|~:]*")


def _quote_cookie_value(value: str) -> str:
    """A cookie value as sent: as it is when plain, else quoted with every other UTF-8
    byte as a backslash-octal escape (what the cookie parser above decodes)."""
    if _COOKIE_PLAIN.fullmatch(value):
        return value
    escaped = "".join(chr(byte) if 0x20 < byte < 0x7F and byte not in b'",;\\' else
                      f"\\{byte:03o}" for byte in value.encode("utf-8"))
    return f'"{escaped}"'


_json_encoder: Any = None


def _compact_json_encoder() -> Any:
    """One encoder for every JsonResponse (json.dumps with options builds one per call)."""
    global _json_encoder
    if _json_encoder is None:
        import json
        _json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    return _json_encoder


# PERF: JSONEncoder.encode builds a C encoder for every call (half its own cost besides
# the encoding). These are built once and reused, each by one caller at a time: taken
# from the list and put back after a success (list.pop and append are atomic). One that
# failed may still hold the ids of the containers it was in: it is dropped.
_idle_json_encoders: list[Callable[[Any, int], Any]] = []


def _new_json_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder that `_compact_json_encoder().encode` would build; None without the
    json module's C accelerator."""
    from json.encoder import (  # type: ignore[attr-defined]
        c_make_encoder,
        encode_basestring,
    )
    if c_make_encoder is None:
        return None
    options = _compact_json_encoder()
    return c_make_encoder(  # type: ignore[no-any-return]
        {} if options.check_circular else None, options.default, encode_basestring,
        None, options.key_separator, options.item_separator, options.sort_keys,
        options.skipkeys, options.allow_nan)


def _compact_json(data: Any) -> bytes:
    """`data` as compact JSON in UTF-8; a lone surrogate (from a client's JSON) escaped."""
    encode: Callable[[Any, int], Any] | None
    try:
        encode = _idle_json_encoders.pop()
    except IndexError:
        encode = _new_json_encoder()
    text: str
    if encode is None:
        text = _compact_json_encoder().encode(data)
    else:
        text = "".join(encode(data, 0))
        _idle_json_encoders.append(encode)
    try:
        return text.encode()
    except UnicodeEncodeError:
        import json
        return json.dumps(data, separators=(",", ":")).encode("ascii")


class JsonResponse(HttpResponse):
    """`data` serialised as JSON; lists are allowed (no JSON-hijacking concern today)."""

    def __init__(self, data: Any, status: int = 200, *,
                 encoder: type[json.JSONEncoder] | None = None,
                 json_dumps_params: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if encoder is None and not json_dumps_params:
            body = _compact_json(data)
            if not kwargs:
                # PERF: what views return most: a constant header, no validation to redo.
                self.status_code = status
                self._headers = {"content-type": _JSON_CONTENT_TYPE}
                self._content = body
                return
        else:
            import json
            body = json.dumps(data, cls=encoder, ensure_ascii=False, separators=(",", ":"),
                              **(json_dumps_params or {})).encode("utf-8")
        kwargs.setdefault("content_type", "application/json")
        super().__init__(body, status, **kwargs)

    def json(self) -> Any:
        import json
        return json.loads(self.content)


def _json_response(data: Any) -> JsonResponse:
    """`JsonResponse(data)` for the dict or list a view returned. PERF: without __init__'s
    argument handling, as _text_response."""
    response: JsonResponse = object.__new__(JsonResponse)
    response.status_code = 200
    response._headers = {"content-type": _JSON_CONTENT_TYPE}
    response._content = _compact_json(data)
    return response


class StreamingHttpResponse(HttpResponse):
    """A response whose body is an iterable, sent chunk by chunk (str chunks as UTF-8)."""

    streaming = True

    def __init__(self, streaming_content: Iterable[Any] = (), status: int = 200,
                 content_type: str | None = None,
                 headers: Mapping[str, str] | None = None, charset: str | None = None) -> None:
        super().__init__(b"", status, content_type, headers, charset)
        self.streaming_content = streaming_content

    @property
    def streaming_content(self) -> Iterator[bytes]:
        """The body's chunks as bytes: an async iterator when `is_async`."""
        if self.is_async:
            return self._async_chunks()  # type: ignore[return-value]
        return map(self._to_bytes, self._iterable)

    @streaming_content.setter
    def streaming_content(self, value: Iterable[Any]) -> None:
        self._iterable = value
        self.is_async = hasattr(value, "__aiter__")
        if hasattr(value, "close"):
            self.add_closer(value.close)

    async def _async_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._iterable:  # type: ignore[attr-defined]
                yield self._to_bytes(chunk)
        finally:  # `async for` leaves an iterator it did not finish open: close it here
            aclose = getattr(self._iterable, "aclose", None)
            if aclose is not None:
                await aclose()

    @property
    def content(self) -> bytes:
        raise AttributeError(f"{type(self).__name__} has no .content; "
                             "iterate .streaming_content")

    @content.setter
    def content(self, value: Any) -> None:
        if value:
            raise AttributeError("Set streaming_content, not content, on a streaming response")

    @property
    def text(self) -> str:
        raise AttributeError(f"{type(self).__name__} has no .text")

    def __iter__(self) -> Iterator[bytes]:
        if self.is_async:  # under WSGI: each chunk awaited on the worker thread's loop
            chunks = _chunks_from_async(self._async_chunks())
            self.add_closer(chunks.close)  # a server that stops early closes the response
            return chunks
        return self.streaming_content

    def getvalue(self) -> bytes:
        return b"".join(self.streaming_content)


def _chunks_from_async(chunks: AsyncIterator[bytes]) -> Generator[bytes, None, None]:
    try:
        while True:
            try:
                yield _await_from_sync(anext(chunks))
            except StopAsyncIteration:
                return
    finally:  # closed early (the client left): the async generator's finally runs now
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            _await_from_sync(aclose())


class FileResponse(StreamingHttpResponse):
    """A file (an open binary file or a path) sent in blocks, through the server's
    `wsgi.file_wrapper` when it has one; Content-Type is guessed from the name."""

    block_size = 64 * 1024

    def __init__(self, file_or_path: str | os.PathLike[str] | IO[bytes],
                 as_attachment: bool = False,
                 filename: str | None = None, status: int = 200,
                 content_type: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        if isinstance(file_or_path, (str, os.PathLike)):
            file_or_path = open(file_or_path, "rb")  # noqa: SIM115 (closed by close())
        self.file = file_or_path
        self.filename = filename or os.path.basename(str(getattr(file_or_path, "name", "")))
        super().__init__(iter(lambda: self.file.read(self.block_size), b""), status,
                         content_type or self._guess_type(), headers)
        self.add_closer(file_or_path.close)
        self._set_length()
        if (as_attachment or self.filename) and "content-disposition" not in self._headers:
            self["Content-Disposition"] = _content_disposition(
                self.filename, "attachment" if as_attachment else "inline")

    def _guess_type(self) -> str:
        import mimetypes
        guessed, encoding = mimetypes.guess_type(self.filename)
        if encoding:  # a .gz file is sent as what it is, not as its contents
            return {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                    "xz": "application/x-xz"}.get(encoding, "application/octet-stream")
        return guessed or "application/octet-stream"

    def _set_length(self) -> None:
        try:
            size = os.fstat(self.file.fileno()).st_size - self.file.tell()
        except (AttributeError, OSError, io.UnsupportedOperation):
            try:
                position = self.file.tell()
                size = self.file.seek(0, io.SEEK_END) - position
                self.file.seek(position)
            except (AttributeError, OSError):
                return
        self["Content-Length"] = str(size)


def _content_disposition(filename: str, disposition: str) -> str:
    """RFC 6266: an ASCII fallback name plus RFC 5987 `filename*` for the real one."""
    if not filename:
        return disposition
    ascii_name = filename.encode("ascii", "ignore").decode().replace("\\", "").replace('"', "")
    ascii_name = "".join(c for c in ascii_name if c.isprintable())
    if ascii_name == filename:
        return f'{disposition}; filename="{ascii_name}"'
    quoted = quote(filename, safe="")
    return f"{disposition}; filename=\"{ascii_name or 'download'}\"; filename*=UTF-8''{quoted}"


_REDIRECT_IGNORED = _lazy_regex(r"[\t\r\n]")


def _url_scheme(url: str) -> str:
    # Browsers drop tabs and newlines anywhere in a URL and leading control characters
    # and spaces, so "java\tscript:" is javascript:. Judge the URL as they will read it.
    cleaned = _REDIRECT_IGNORED.sub("", url).lstrip("".join(map(chr, range(33))))
    return urlsplit(cleaned).scheme.lower()


class HttpResponseRedirect(HttpResponse):
    """A redirect to a relative, http or https URL; any other scheme is refused."""

    allowed_schemes = ("", "http", "https")

    def __init__(self, url: str, status: int = 302, **kwargs: Any) -> None:
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"A redirect's status is 301, 302, 303, 307 or 308, not {status}")
        try:
            scheme = _url_scheme(str(url))
        except ValueError:
            raise DisallowedRedirect("Unsafe redirect to a malformed URL") from None
        if scheme not in self.allowed_schemes:
            # The URL is often the client's ("?next="): the message does not repeat it.
            raise DisallowedRedirect("Unsafe redirect: only relative, http and https URLs")
        super().__init__(b"", status, **kwargs)
        self["Location"] = quote(str(url), safe="/#%[]=:;$&()+,!?*@'~")

    @property
    def url(self) -> str:
        return self["Location"]


def redirect(to: str, /, *args: Any, permanent: bool = False,
             **kwargs: Any) -> HttpResponseRedirect:
    """Redirect to a route by name (with its arguments), or else to a URL; as in Django,
    the name is tried first."""
    request = _current_request.get()
    app = request.app if request is not None else None
    looks_like_url = "/" in to or "." in to or ":" in to
    if app is not None and not to.startswith(("/", "http:", "https:")):
        try:
            return HttpResponseRedirect(app.reverse(to, *args, **kwargs),
                                        status=301 if permanent else 302)
        except NoReverseMatch:
            if args or kwargs or not looks_like_url:
                raise
    elif not looks_like_url:
        raise NoReverseMatch(f"redirect({to!r}) needs a request to resolve a route name")
    return HttpResponseRedirect(to, status=301 if permanent else 302)


def is_safe_url(url: str | None, allowed_hosts: str | Iterable[str] | None = None,
                require_https: bool = False) -> bool:
    """Whether a user-supplied "next" URL stays on this site (relative) or on one of
    `allowed_hosts`; refuses `//evil`, `\\\\evil`, `javascript:` and the like."""
    if not url or not isinstance(url, str):
        return False
    url = url.strip()
    if isinstance(allowed_hosts, str):
        allowed_hosts = {allowed_hosts}
    hosts = {h.lower() for h in allowed_hosts or ()}
    request = _current_request.get()
    if request is not None:  # "same host": the one this request came to
        try:
            hosts.add(request.host)
        except BadRequest:
            pass
    # Browsers read a backslash as a slash, so check both spellings.
    return (_is_safe_url(url, hosts, require_https)
            and _is_safe_url(url.replace("\\", "/"), hosts, require_https))


def _is_safe_url(url: str, hosts: set[str], require_https: bool) -> bool:
    if url.startswith("///") or not url or ord(url[0]) < 32 or ord(url[0]) == 127:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.netloc and parts.scheme:  # "javascript:..." or "http:evil"
        return False
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        return False
    if require_https and parts.netloc and parts.scheme.lower() != "https":
        return False
    return not parts.netloc or parts.netloc.lower() in hosts


class TemplateResponse(HttpResponse):
    """A response rendered late: middleware may change `template_name` and `context_data`
    in `process_template_response`, before the handler calls `render()`."""

    def __init__(self, template: str, context: Mapping[str, Any] | None = None,
                 status: int = 200, content_type: str | None = None,
                 headers: Mapping[str, str] | None = None, charset: str | None = None) -> None:
        super().__init__(b"", status, content_type, headers, charset)
        self.template_name = template
        self.context_data: dict[str, Any] = dict(context or {})
        self.is_rendered = False

    @property
    def content(self) -> bytes:
        if not self.is_rendered:
            raise TemplateError(f"The response for {self.template_name!r} is not rendered "
                                "yet: call render() first")
        return self._content

    @content.setter
    def content(self, value: Any) -> None:
        # As in Django: content set by hand is the rendered content; render() keeps it.
        HttpResponse.content.fset(self, value)  # type: ignore[attr-defined]
        self.is_rendered = True

    def render(self) -> TemplateResponse:
        """Render the template (once) with the request's App renderer."""
        if not self.is_rendered:
            request = _current_request.get()
            app = request.app if request is not None else None
            renderer = app.render_template if app is not None else _render_without_app
            self.content = renderer(self.template_name, self.context_data, request)
        return self

    def __iter__(self) -> Iterator[bytes]:
        return iter((self.content,))


# ---------------------------------------------------------------- templates


def _escape_html(text: str) -> str:
    """What html.escape(text, quote=True) gives, without importing html at start-up."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))


class SafeString(str):
    """Text that is already HTML (escaped or trusted): templates write it without escaping."""

    __slots__ = ()

    def __html__(self) -> SafeString:
        # The de facto protocol (markupsafe, Django, Jinja2): lets other libraries trust it too.
        return self

    def __str__(self) -> str:
        # str(safe) keeps the mark, so converting a value does not make it escaped twice.
        return self

    def __add__(self, other: str) -> str:
        # safe + safe is still safe; safe + untrusted text is not.
        joined = str.__add__(self, other)
        return SafeString(joined) if isinstance(other, SafeString) else joined


def _to_html(value: Any) -> str:
    """Return `value` as HTML text: escaped, unless it is already marked safe."""
    if type(value) is str:  # the common case, checked first because render() is hot
        return _escape_html(value)
    if isinstance(value, SafeString):
        return value
    html_method = getattr(value, "__html__", None)
    if callable(html_method):
        return str(html_method())
    return _escape_html(str(value))


def mark_safe(value: Any) -> SafeString:
    """Mark `value` (converted to text) as trusted HTML, to be written without escaping."""
    return value if isinstance(value, SafeString) else SafeString(str(value))


def escape(value: Any) -> SafeString:
    """HTML-escape `value` once (``& < > " '``); a SafeString or an object with ``__html__``
    is returned as it is, never escaped twice."""
    return value if isinstance(value, SafeString) else SafeString(_to_html(value))


if TYPE_CHECKING:  # the scope is the context plus loop names
    _TemplateScope = dict[str, Any]
    _Eval = Callable[[_TemplateScope], Any]
    _Render = Callable[[_TemplateScope, list[str]], None]
    _Blocks = dict[str, tuple[_Render, ...]]  # block name -> its versions, most derived first
    _Filter = tuple[str, Callable[..., Any], _Eval | None]  # name, function, argument

# Marks "lookup found nothing"; distinct from None, which is a legitimate value to print.
_UNRESOLVED: Any = object()
# The scope key under which a template's blocks travel: no template can write this name.
_BLOCKS = " blocks"
# Deeper nesting of tags, parentheses or templates is refused when compiled, so that no
# template, however written, ends in Python's RecursionError.
_MAX_NESTING = 40


class _TemplateOrigin:
    """Where a node comes from, so that every error can name the template and the line."""

    __slots__ = ("line", "template")

    def __init__(self, template: str, line: int) -> None:
        self.template = template
        self.line = line

    def error(self, message: str) -> TemplateError:
        return TemplateError(f"{message} (template {self.template!r}, line {self.line})")


# -- templates: variable lookup

# What a failed `obj[key]` raises on dicts, sequences and objects that are not containers.
_LOOKUP_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def _lookup_step(obj: Any, key: str, index: int | None) -> Any:
    """One step of a dotted lookup, in Django's order: key, then attribute, then list index."""
    if hasattr(type(obj), "__getitem__"):  # skip the costly failing obj[key] on plain objects
        try:
            return obj[key]
        except _LOOKUP_ERRORS:
            pass
    try:
        return getattr(obj, key)
    except AttributeError:
        pass
    if index is not None:
        try:
            return obj[index]
        except _LOOKUP_ERRORS:
            pass
    return _UNRESOLVED


def _call_if_callable(value: Any) -> Any:
    """Call what a lookup found, as Django does (`{{ user.get_full_name }}`); not classes, nor
    objects with ``do_not_call_in_templates``. One that needs arguments counts as not found,
    and so does one marked ``alters_data`` (``{{ obj.delete }}`` must not delete anything)."""
    if not callable(value) or isinstance(value, type):
        return value
    if getattr(value, "do_not_call_in_templates", False):
        return value
    if getattr(value, "alters_data", False):
        return _UNRESOLVED
    try:
        return value()
    except TypeError:
        if _signature_fits(value):  # no signature: assume it needed arguments
            raise  # a TypeError from inside the callable is a bug to show, not a missing value
        return _UNRESOLVED


def _signature_fits(func: Callable[..., Any], *args: Any) -> bool | None:
    """Whether `func` can be called with `args`; None when it has no signature to read."""
    import inspect
    try:
        inspect.signature(func).bind(*args)
    except TypeError:
        return False
    except ValueError:  # some builtins
        return None
    return True


def _compile_lookup(path: str, origin: _TemplateOrigin, strict: bool,
                    missing: Any = "") -> _Eval:
    """Compile a dotted name such as ``user.addresses.0.city`` into an evaluator; what is not
    there gives `missing`, or a TemplateError when `strict`."""
    segments = path.split(".")
    head = segments[0]
    steps = tuple((key, int(key) if key.isascii() and key.isdigit() else None)
                  for key in segments[1:])

    def not_found(failed: int) -> Any:
        if not strict:
            return missing
        if failed == 0:
            raise origin.error(f"name {head!r} is not defined")
        raise origin.error(
            f"cannot resolve {path!r}: {'.'.join(segments[:failed])!r} has no key, attribute "
            f"or index {segments[failed]!r} (or a callable that needs arguments or alters data)")

    def evaluate(scope: _TemplateScope) -> Any:
        value = _call_if_callable(scope.get(head, _UNRESOLVED))
        if value is _UNRESOLVED:
            return not_found(0)
        for position, (key, index) in enumerate(steps, 1):
            value = _call_if_callable(_lookup_step(value, key, index))
            if value is _UNRESOLVED:
                return not_found(position)
        return value

    return evaluate


# -- templates: filters (the README lists them; App(template_filters=...) adds more)

def _changing_case(method: Callable[[str], str]) -> Callable[[Any], str]:
    # Trusted HTML stays trusted: upper-cased, it must not be escaped again.
    return lambda value: (SafeString if isinstance(value, SafeString) else str)(
        method(str(value)))


def _filter_join(value: Any, separator: Any) -> SafeString:
    # Each item and the separator are escaped here, once; the result is then trusted.
    return SafeString(_to_html(separator).join(_to_html(item) for item in value))


def _filter_date(value: Any, pattern: str = "%Y-%m-%d") -> Any:
    """`strftime` on a date, datetime or time; None and "" give "" as in Django."""
    if value is None or value == "":
        return ""
    if not hasattr(value, "strftime"):
        raise TypeError(f"expected a date or datetime, not {type(value).__name__}")
    return value.strftime(pattern)


# Called as func(value) or func(value, argument): the function's signature says which.
_FILTERS: dict[str, Callable[..., Any]] = {
    "safe": mark_safe, "escape": escape, "length": len, "join": _filter_join,
    "upper": _changing_case(str.upper), "lower": _changing_case(str.lower),
    "title": _changing_case(str.title), "date": _filter_date,
    "default": lambda value, fallback: value or fallback,
    "first": lambda value: next(iter(value), ""), "last": lambda value: (list(value) or [""])[-1],
    "int": lambda value: int(value),  # int itself has no signature to check
    "string": lambda value: value if isinstance(value, SafeString) else str(value),
}


def _compile_filters(evaluate: _Eval, filters: list[_Filter], origin: _TemplateOrigin,
                     strict: bool) -> _Eval:
    """Wrap `evaluate` so that its value goes through each filter in turn."""

    def filtered(scope: _TemplateScope) -> Any:
        value = evaluate(scope)
        for name, func, argument in filters:
            args = () if argument is None else (argument(scope),)  # its own errors, unwrapped
            try:
                value = func(value, *args)
            except Exception as exc:  # user data can make any filter fail (int("abc"))
                if strict:
                    raise origin.error(
                        f"filter {name!r} failed: {type(exc).__name__}: {exc}") from exc
                value = ""
        return value

    return filtered


# -- templates: expressions

_EXPRESSION_TOKEN = _lazy_regex(r"""(?xs)
    \s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
      | (?P<name>[^\W\d]\w*(?:\.\w+)*)
      | (?P<op>==|!=|<=|>=|[<>()|:,])
    )""")

_WORD_OPERATORS = frozenset({"and", "or", "not", "in", "is"})
_CONSTANTS: dict[str, Any] = {"True": True, "False": False, "None": None}
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
    "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
    "is": lambda a, b: a is b, "is not": lambda a, b: a is not b,
}


def _lex_expression(text: str, origin: _TemplateOrigin) -> list[tuple[str, str]]:
    """Cut an expression into (kind, text): string number name const op, then ("end", "")."""
    tokens: list[tuple[str, str]] = []
    text = text.strip()
    position = 0
    while position < len(text):
        match = _EXPRESSION_TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise origin.error(f"bad expression {text!r}: unexpected {text[position:].strip()!r}")
        kind, word = match.lastgroup, match.group(match.lastgroup)
        if kind == "name" and word in _WORD_OPERATORS:
            kind = "op"
        elif kind == "name" and word in _CONSTANTS:
            kind = "const"
        tokens.append((kind, word))
        position = match.end()
    tokens.append(("end", ""))
    return tokens


_BACKSLASH_ESCAPE = _lazy_regex(r"(?s)\\(.)")


def _unquote_literal(literal: str) -> str:
    # Inside quotes a backslash only protects the next character (\" \' \\).
    return _BACKSLASH_ESCAPE.sub(r"\1", literal[1:-1])


def _compare(op: str, left: _Eval, right: _Eval, origin: _TemplateOrigin, strict: bool) -> _Eval:
    func = _COMPARISONS[op]

    def evaluate(scope: _TemplateScope) -> Any:
        a, b = left(scope), right(scope)
        try:
            return func(a, b)
        except TypeError as exc:  # 1 < "a", 3 in None: false when lenient, as in Django
            if strict:
                raise origin.error(f"cannot evaluate {op!r}: {exc}") from exc
            return False

    return evaluate


class _ExpressionParser:
    """Recursive descent over one tag's tokens; each method returns a compiled evaluator.

    condition := and ("or" and)*             and := not ("and" not)*
    not := "not"* comparison      comparison := operand (op operand | "is" "not"? "defined")?
    operand := "(" condition ")" | value ("|" name (":" value)?)*
    value := string | number | True | False | None | dotted.name
    """

    def __init__(self, text: str, origin: _TemplateOrigin, strict: bool,
                 filters: Mapping[str, Callable[..., Any]]) -> None:
        self.text = text.strip()
        self.origin = origin
        self.strict = strict
        self.filters = filters  # the App's own; the built-in ones are looked up after them
        self.tokens = _lex_expression(text, origin)
        self.position = 0
        self.depth = 0  # of parentheses

    def fail(self, why: str) -> TemplateError:
        return self.origin.error(f"bad expression {self.text!r}: {why}")

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.position]
        self.position += token[0] != "end"
        return token

    def accept(self, op: str, kind: str = "op") -> bool:
        found = self.tokens[self.position] == (kind, op)
        self.position += found
        return found

    def expect_end(self) -> None:
        if self.tokens[self.position][0] != "end":
            raise self.fail(f"unexpected {self.tokens[self.position][1]!r}")

    def condition(self) -> _Eval:
        return self._joined("or", lambda: self._joined("and", self._not))

    def _joined(self, word: str, parse: Callable[[], _Eval]) -> _Eval:
        """``a or b or c`` as one flat test (a chain of closures would recurse at render)."""
        operands = [parse()]
        while self.accept(word):
            operands.append(parse())
        stop = word == "and"  # `and` stops at the first false operand, `or` at a true one

        def evaluate(scope: _TemplateScope) -> bool:
            for operand in operands:
                if (not operand(scope)) is stop:
                    return not stop
            return stop

        return operands[0] if len(operands) == 1 else evaluate

    def _not(self) -> _Eval:
        negations = 0
        while self.accept("not"):
            negations += 1
        operand = self._comparison()
        return (lambda scope: not operand(scope)) if negations % 2 else operand

    def _comparison(self) -> _Eval:
        start = self.position
        left = self._operand()
        kind, op = self.tokens[self.position]
        if kind != "op" or (op not in _COMPARISONS and op != "not"):
            return left
        self.position += 1
        if op == "not":
            if not self.accept("in"):
                raise self.fail("expected 'in' after 'not'")
            op = "not in"
        elif op == "is" and self.accept("not"):
            op = "is not"
        if not (op.startswith("is") and self.accept("defined", "name")):
            return _compare(op, left, self._operand(), self.origin, self.strict)
        # `x.y is defined`: whether the lookup finds something; never an error.
        kind, path = self.tokens[start]
        if kind != "name" or self.tokens[start + 1][1] != "is":
            raise self.fail("'is defined' tests a name, as in 'user.email is defined'")
        probe, positive = _compile_lookup(path, self.origin, False, _UNRESOLVED), op == "is"
        return lambda scope: (probe(scope) is not _UNRESOLVED) is positive

    def _operand(self) -> _Eval:
        if not self.accept("("):
            return self.filtered()
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.fail(f"more than {_MAX_NESTING} nested parentheses")
        inner = self.condition()
        if not self.accept(")"):
            raise self.fail("missing ')'")
        self.depth -= 1
        return inner

    def filtered(self) -> _Eval:
        """A value followed by its filters: ``user.name|default:"anon"|upper``."""
        kind, value = self._value()
        filters: list[_Filter] = []
        while self.accept("|"):
            filters.append(self._filter())
        # `default` is how a template says "this may be missing": never strict about it.
        lenient = any(name == "default" for name, _, _ in filters)
        evaluate = self._compiled(kind, value, self.strict and not lenient)
        if not filters:
            return evaluate
        return _compile_filters(evaluate, filters, self.origin, self.strict)

    def _value(self) -> tuple[str, Any]:
        """Return ("literal", value) or ("lookup", "dotted.name")."""
        kind, word = self.take()
        if kind == "string":
            return "literal", SafeString(_unquote_literal(word))  # written by the template's author
        if kind == "number":
            try:
                return "literal", float(word) if "." in word else int(word)
            except ValueError:  # more digits than int() converts
                raise self.fail(f"number too long: {word[:20]}...") from None
        if kind == "const":
            return "literal", _CONSTANTS[word]
        if kind == "name":
            if any(part.startswith("_") for part in word.split(".")):
                raise self.fail("names starting with '_' are private")
            return "lookup", word
        raise self.fail(f"expected a value, found {word!r}" if word else "expected a value")

    def _compiled(self, kind: str, value: Any, strict: bool) -> _Eval:
        if kind == "literal":
            return lambda scope: value
        return _compile_lookup(value, self.origin, strict)

    def _filter(self) -> _Filter:
        kind, name = self.take()
        if kind != "name" or "." in name:
            raise self.fail("expected a filter name after '|'")
        func = self.filters.get(name) or _FILTERS.get(name)
        if func is None:
            known = ", ".join(sorted({*_FILTERS, *self.filters}))
            raise self.origin.error(f"unknown filter {name!r} (known filters: {known})")
        argument = self._compiled(*self._value(), self.strict) if self.accept(":") else None
        if _signature_fits(func, None, *[None] * (argument is not None)) is False:
            raise self.origin.error(f"filter {name!r} takes no argument" if argument else
                                    f"filter {name!r} needs an argument ({name}:value)")
        return name, func, argument


# -- templates: nodes

def _sequence_node(parts: list[str | _Render]) -> _Render:
    """One render function for a run of texts and nodes."""
    nodes = tuple(_text_node(part) if isinstance(part, str) else part for part in parts if part)
    if len(nodes) == 1:
        return nodes[0]

    def render(scope: _TemplateScope, out: list[str]) -> None:
        for node in nodes:
            node(scope, out)

    return render


def _text_node(text: str) -> _Render:
    return lambda scope, out: out.append(text)


def _output_node(evaluate: _Eval) -> _Render:
    return lambda scope, out: out.append(_to_html(evaluate(scope)))


class _LoopState:
    """The `loop` variable inside ``{% for %}``; only `index0` changes from item to item."""

    __slots__ = ("index0", "length", "parent")

    def __init__(self, length: int, parent: _LoopState | None) -> None:
        self.index0 = 0
        self.length = length
        self.parent = parent  # the enclosing loop's `loop`, as Django's forloop.parentloop

    index = property(lambda self: self.index0 + 1)
    revindex = property(lambda self: self.length - self.index0)
    revindex0 = property(lambda self: self.length - self.index0 - 1)
    first = property(lambda self: self.index0 == 0)
    last = property(lambda self: self.index0 == self.length - 1)


def _loop_items(value: Any, reverse: bool, origin: _TemplateOrigin, strict: bool) -> list[Any]:
    # A list up front: loop.length and loop.last need the count before the first item.
    try:
        items = list(value)
    except TypeError as exc:
        if strict:
            raise origin.error(f"cannot loop over {type(value).__name__}: {exc}") from exc
        return []
    if reverse:
        items.reverse()
    return items


def _unpack(item: Any, count: int, origin: _TemplateOrigin, strict: bool) -> tuple[Any, ...]:
    try:
        values = tuple(item)
    except TypeError:
        values = ()
    if len(values) != count:
        if strict:
            raise origin.error(f"cannot unpack {type(item).__name__} into {count} loop variables")
        values = (values + ("",) * count)[:count]
    return values


def _restore_names(scope: _TemplateScope, names: tuple[str, ...], saved: list[Any]) -> None:
    """Put back what a tag's own names hid, so that it leaves the scope as it found it (no
    `finally` is needed: a render that fails throws its scope away)."""
    for name, old in zip(names, saved, strict=True):
        if old is _UNRESOLVED:
            scope.pop(name, None)
        else:
            scope[name] = old


def _for_node(header: tuple[tuple[str, ...], _Eval, bool], body: _Render,
              otherwise: _Render | None, origin: _TemplateOrigin, strict: bool) -> _Render:
    targets, iterable, reverse = header
    names = (*targets, "loop")

    def render(scope: _TemplateScope, out: list[str]) -> None:
        items = _loop_items(iterable(scope), reverse, origin, strict)
        if not items:
            if otherwise is not None:
                otherwise(scope, out)
            return
        saved = [scope.get(name, _UNRESOLVED) for name in names]
        outer = saved[-1] if type(saved[-1]) is _LoopState else None
        loop = scope["loop"] = _LoopState(len(items), outer)
        for index0, item in enumerate(items):
            loop.index0 = index0
            if len(targets) == 1:
                scope[targets[0]] = item
            else:
                values = _unpack(item, len(targets), origin, strict)
                scope.update(zip(targets, values, strict=True))
            body(scope, out)
        _restore_names(scope, names, saved)

    return render


def _render_block(versions: tuple[_Render, ...], scope: _TemplateScope, out: list[str]) -> None:
    """Render the most derived version of a block; `{{ block.super }}` renders the next one
    (a callable, which the lookup calls only when a template asks for it)."""

    def parent() -> SafeString:
        inner: list[str] = []
        if len(versions) > 1:
            _render_block(versions[1:], scope, inner)
        return SafeString("".join(inner))

    saved = [scope.get("block", _UNRESOLVED)]
    scope["block"] = {"super": parent}
    versions[0](scope, out)
    _restore_names(scope, ("block",), saved)


# -- templates: the parser

class _TemplateTag(_TemplateOrigin):
    """``{% name args %}``, and where it is."""

    __slots__ = ("args", "name")

    def __init__(self, template: str, line: int, content: str) -> None:
        super().__init__(template, line)
        self.name, self.args = ([*content.split(None, 1), "", ""])[:2]


_TAG_OPENER = _lazy_regex(r"\{[{%#]")
_TAG_CLOSERS = {"{{": "}}", "{%": "%}", "{#": "#}"}
# Tags that only make sense inside a block, with the tag that opens that block.
_INNER_TAGS = {"elif": "if", "else": "if' or 'for", "endif": "if", "empty": "for",
               "endfor": "for", "endcomment": "comment", "endblock": "block"}


def _tokenize_template(source: str, name: str) -> list[tuple[str, str, int]]:
    """Cut the source into (kind, content, line), kind "text", "{{", "{%" or "{#"."""
    tokens: list[tuple[str, str, int]] = []
    position, line = 0, 1
    while (match := _TAG_OPENER.search(source, position)) is not None:
        start, opener = match.start(), match.group()
        if start > position:
            tokens.append(("text", source[position:start], line))
            line += source.count("\n", position, start)
        closer = _TAG_CLOSERS[opener]
        end = source.find(closer, start + 2)
        if end < 0:
            raise _TemplateOrigin(name, line).error(f"unclosed {opener!r}: add {closer!r}")
        tokens.append((opener, source[start + 2:end], line))
        line += source.count("\n", start, end)
        position = end + 2
    if position < len(source):
        tokens.append(("text", source[position:], line))
    return tokens


class _TemplateParser:
    """Turns the tokens of one template into a tree of render closures, and its blocks."""

    def __init__(self, source: str, name: str, strict: bool,
                 filters: Mapping[str, Callable[..., Any]], loader: TemplateLoader | None) -> None:
        self.name = name
        self.strict = strict
        self.filters = filters
        self.loader = loader
        self.tokens = _tokenize_template(source, name)
        self.position = 0
        self.depth = 0  # of nested tags
        self.first_tag = True  # `extends` must be the first tag, as in Django
        self.parent: Template | None = None
        self.blocks: dict[str, _Render] = {}  # those closed so far
        self.block_lines: dict[str, int] = {}  # those opened so far

    def parse(self) -> tuple[_Render, _Blocks]:
        """The body to render and the blocks, each with the versions it overrides."""
        body, _ = self.block(frozenset())
        if self.parent is None:
            return body, {name: (render,) for name, render in self.blocks.items()}
        blocks = dict(self.parent._blocks)  # what a child writes outside its blocks is ignored
        for name, render in self.blocks.items():
            blocks[name] = (render, *blocks.get(name, ()))
        return self.parent._body, blocks

    def block(self, until: frozenset[str]) -> tuple[_Render, _TemplateTag | None]:
        """Parse nodes up to one of the tags in `until` (returned) or the end (None)."""
        parts: list[str | _Render] = []
        end = None
        self.depth += 1
        while end is None and self.position < len(self.tokens):
            kind, content, line = self.tokens[self.position]
            self.position += 1
            if kind == "text":
                parts.append(content)
            elif kind == "{{":
                origin = _TemplateOrigin(self.name, line)
                parser = _ExpressionParser(content, origin, self.strict, self.filters)
                parts.append(_output_node(parser.filtered()))
                parser.expect_end()
                self.first_tag = False
            elif kind == "{%":
                tag = _TemplateTag(self.name, line, content)
                if tag.name in until:
                    end = tag
                else:
                    parts.append(self._tag(tag, until))
                    self.first_tag = self.first_tag and tag.name == "comment"
        self.depth -= 1
        return _sequence_node(parts), end

    def _tag(self, tag: _TemplateTag, until: frozenset[str]) -> str | _Render:
        handler = self._TAGS.get(tag.name)
        if not tag.name:
            raise tag.error("empty tag '{% %}'")
        if self.depth > _MAX_NESTING:
            raise tag.error(f"tags nested more than {_MAX_NESTING} deep")
        if handler is not None:
            return handler(self, tag)
        if tag.name in _INNER_TAGS:
            where = (f"expected {' or '.join(map(repr, sorted(until)))}" if until
                     else f"no open '{_INNER_TAGS[tag.name]}' here")
            raise tag.error(f"unexpected '{tag.name}': {where}")
        raise tag.error(f"unknown tag {tag.name!r} (known tags: {', '.join(self._TAGS)})")

    def _branches(self, opener: _TemplateTag, middle: tuple[str, ...], end: str,
                  ) -> tuple[list[tuple[_TemplateTag, _Render]], _TemplateTag]:
        """The bodies of `opener` up to `end`, each with the tag before it (if, elif, else)."""
        branches: list[tuple[_TemplateTag, _Render]] = []
        tag = opener
        while True:
            body, closer = self.block(frozenset({*middle, end}))
            branches.append((tag, body))
            if closer is None:
                raise opener.error(f"'{opener.name}' tag is never closed: expected '{{% {end} %}}'")
            if tag.name in ("else", "empty") and closer.name != end:
                raise closer.error(f"'{closer.name}' after '{tag.name}' in the "
                                   f"'{opener.name}' of line {opener.line}")
            if closer.args.strip() and closer.name not in ("elif", "endblock"):
                raise closer.error(f"'{closer.name}' takes no arguments")
            if closer.name == end:
                return branches, closer
            tag = closer

    def _if(self, opener: _TemplateTag) -> _Render:
        branches, _ = self._branches(opener, ("elif", "else"), "endif")
        otherwise = branches.pop()[1] if branches[-1][0].name == "else" else None
        tests = []
        for tag, body in branches:
            if not tag.args.strip():
                raise tag.error(f"'{tag.name}' needs a condition")
            parser = _ExpressionParser(tag.args, tag, self.strict, self.filters)
            tests.append((parser.condition(), body))
            parser.expect_end()

        def render(scope: _TemplateScope, out: list[str]) -> None:
            for test, body in tests:
                if test(scope):
                    body(scope, out)
                    return
            if otherwise is not None:
                otherwise(scope, out)

        return render

    def _for(self, opener: _TemplateTag) -> _Render:
        """``{% for k, v in d.items reversed %}``."""
        parser = _ExpressionParser(opener.args, opener, self.strict, self.filters)
        targets: list[str] = []
        while not targets or parser.accept(","):
            kind, word = parser.take()
            if kind != "name" or "." in word or word.startswith("_") or word == "loop":
                raise opener.error(f"bad 'for' tag: {word!r} cannot be a loop variable")
            targets.append(word)
        if not parser.accept("in"):
            raise opener.error("bad 'for' tag: expected 'for name in sequence'")
        header = (tuple(targets), parser.filtered(), parser.accept("reversed", "name"))
        parser.expect_end()
        branches, _ = self._branches(opener, ("else", "empty"), "endfor")
        otherwise = branches[1][1] if len(branches) > 1 else None
        return _for_node(header, branches[0][1], otherwise, opener, self.strict)

    def _comment(self, opener: _TemplateTag) -> str:
        # The content is not parsed: a comment may hold broken or unknown tags.
        while self.position < len(self.tokens):
            kind, content, _ = self.tokens[self.position]
            self.position += 1
            if kind == "{%" and content.split(None, 1)[:1] == ["endcomment"]:
                return ""
        raise opener.error("'comment' tag is never closed: expected '{% endcomment %}'")

    def _block(self, opener: _TemplateTag) -> _Render:
        name = opener.args.strip()
        if not name.isidentifier():
            raise opener.error("'block' needs a name: {% block content %}")
        if name in self.block_lines:
            raise opener.error(f"block {name!r} is already on line {self.block_lines[name]}")
        outermost = len(self.block_lines) == len(self.blocks)  # no other block is open
        if outermost and self.parent is not None and name not in self.parent._blocks:
            raise opener.error(f"block {name!r} is not in {self.parent.name!r} (its blocks: "
                               f"{', '.join(self.parent._blocks) or 'none'}): never shown")
        self.block_lines[name] = opener.line
        branches, end = self._branches(opener, (), "endblock")
        if end.args.strip() not in ("", name):
            raise end.error(f"'endblock {end.args.strip()}' closes block {name!r}")
        self.blocks[name] = branches[0][1]
        # The versions come with the template being rendered: a child's override wins.
        return lambda scope, out: _render_block(scope[_BLOCKS][name], scope, out)

    def _extends(self, tag: _TemplateTag) -> str:
        if not self.first_tag or self.depth != 1:
            raise tag.error("'extends' must be the first tag in the template")
        self.parent = self._load(tag)
        return ""

    def _include(self, tag: _TemplateTag) -> _Render:
        return self._load(tag)._render

    def _load(self, tag: _TemplateTag) -> Template:
        """The template that `extends` or `include` names, compiled now."""
        tokens = _lex_expression(tag.args, tag)
        if len(tokens) != 2 or tokens[0][0] != "string":
            raise tag.error(f"'{tag.name}' takes a quoted template name, as in "
                            f"{{% {tag.name} \"page.html\" %}}")
        name = _unquote_literal(tokens[0][1])
        if self.loader is None:
            raise tag.error(f"'{tag.name}' needs a TemplateLoader to find {name!r}")
        return self.loader._load(name, tag)

    _TAGS: dict[str, Callable[[_TemplateParser, _TemplateTag], str | _Render]] = {
        "if": _if, "for": _for, "comment": _comment, "block": _block, "extends": _extends,
        "include": _include,
    }


# -- templates: public classes

class Template:
    """A template compiled once, at construction; `render()` only runs the compiled code.

    `strict=True` (the App passes its `debug`) turns a missing name or a failing filter into
    a TemplateError naming the template and the line, instead of an empty string. `filters`
    adds to the built-in filters; `loader` finds what `extends` and `include` name.
    """

    def __init__(self, source: str, name: str = "<string>", *, strict: bool = False,
                 filters: Mapping[str, Callable[..., Any]] | None = None,
                 loader: TemplateLoader | None = None) -> None:
        self.source = source
        self.name = name
        self.strict = strict
        # With `extends`, the body is the root parent's, and blocks hold every version.
        self._body, self._blocks = _TemplateParser(
            source, name, strict, filters or {}, loader).parse()

    def render(self, context: Mapping[str, Any] | None = None) -> str:
        """Render with `context`; the result is a SafeString (it is HTML already)."""
        out: list[str] = []
        # A private copy: loop variables are set in it, the caller's mapping is never changed.
        self._render(dict(context) if context else {}, out)
        return SafeString("".join(out))

    def _render(self, scope: _TemplateScope, out: list[str]) -> None:
        outer = scope.get(_BLOCKS)  # an included template's blocks hold only while it runs
        scope[_BLOCKS] = self._blocks
        self._body(scope, out)
        scope[_BLOCKS] = outer

    def __repr__(self) -> str:
        return f"<Template {self.name!r}>"


def _template_path_parts(name: str) -> list[str] | None:
    """Split a template name into path parts, or None when it could leave the template dirs."""
    if not name or "\x00" in name or os.path.isabs(name) or os.path.splitdrive(name)[0]:
        return None
    parts = name.replace("\\", "/").split("/")
    if parts[0] == "" or ".." in parts:
        return None
    return [part for part in parts if part not in ("", ".")]


class TemplateLoader:
    """Finds templates by name in `dirs` (first dir that has the file wins), compiles each
    once and caches it by name; safe to share between the threads of a server. `filters` is
    kept, not copied: one added later counts in the templates compiled (first used) after."""

    def __init__(self, dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *,
                 strict: bool = False,
                 filters: Mapping[str, Callable[..., Any]] | None = None) -> None:
        if isinstance(dirs, (str, os.PathLike)):  # one dir given bare: not a list of letters
            dirs = [dirs]
        self.dirs: tuple[str, ...] = tuple(os.fspath(directory) for directory in dirs)
        self.strict = strict
        self.filters: Mapping[str, Callable[..., Any]] = {} if filters is None else filters
        self._cache: dict[str, Template] = {}
        self._lock = _thread.RLock()  # re-entered to compile what a template extends
        self._compiling: list[str] = []  # names being compiled, outermost first: cycles show

    def get_template(self, name: str) -> Template:
        return self._cache.get(name) or self._load(name, None)

    def render(self, name: str, context: Mapping[str, Any] | None = None) -> str:
        return self.get_template(name).render(context)

    def _load(self, name: str, origin: _TemplateOrigin | None) -> Template:
        """The compiled template; `origin` is the extends or include tag that asks for it."""
        fail = TemplateError if origin is None else origin.error
        with self._lock:  # one compile per name even when threads ask at the same time
            template = self._cache.get(name)
            if template is not None:
                return template
            if name in self._compiling:
                chain = " -> ".join(repr(each) for each in [*self._compiling, name])
                raise fail(f"templates extend or include each other in a cycle: {chain}")
            if len(self._compiling) >= _MAX_NESTING:
                raise fail(f"templates extend or include more than {_MAX_NESTING} deep")
            self._compiling.append(name)
            try:
                template = Template(self._read(name, fail), name, strict=self.strict,
                                    filters=self.filters, loader=self)
            finally:
                self._compiling.pop()
            self._cache[name] = template
            return template

    def _read(self, name: str, fail: Callable[[str], TemplateError]) -> str:
        searched = ", ".join(repr(directory) for directory in self.dirs) or "(no dirs)"
        parts = _template_path_parts(name)
        if parts is None:
            raise fail(f"template name {name!r} is refused: it must be a relative "
                       f"path inside the template dirs ({searched})")
        for directory in self.dirs:
            path = os.path.join(directory, *parts)
            try:
                # utf-8-sig drops an editor's BOM; newline="" keeps line ends as written.
                with open(path, encoding="utf-8-sig", newline="") as file:
                    return file.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
            except UnicodeDecodeError as exc:
                raise fail(f"template {name!r} ({path}) is not UTF-8: {exc}") from exc
        raise fail(f"template {name!r} not found; searched: {searched}")


# ---------------------------------------------------------------- routing

class _Converter:
    """How a `<conv:name>` placeholder matches (`regex`) and converts its text."""

    def __init__(self, regex: str, to_python: Callable[[str], Any] = str,
                 safe: str = "", fits: Callable[[str], bool] | None = None) -> None:
        self.regex = regex
        self.to_python = to_python
        self.safe = safe  # characters reverse() leaves unquoted
        # PERF: the same test as `regex` for a non-empty value, without the regex engine,
        # for the routes that end in their only placeholder: see Route._make_tail_matcher.
        self.fits = fits
        self._pattern = _lazy_regex(regex)

    def to_url(self, value: Any) -> str:
        text = str(value)
        if self._pattern.fullmatch(text) is None:
            raise ValueError(text)
        return quote(text, safe=self.safe)


# What a non-empty placeholder value may hold, as C-level tests (PERF: no Python call):
# [^/]+ holds no "/", and [0-9]+ only ASCII digits ("²" and "٣" are digits too).
_SLASH, _ASCII_DIGITS = frozenset("/"), frozenset("0123456789")


def _to_finite_float(text: str) -> float:
    value = float(text)
    if value == float("inf"):  # 400 nines: not a path this route serves
        raise ValueError(text)
    return value


def _to_uuid(text: str) -> Any:
    import uuid
    return uuid.UUID(text)


_CONVERTERS: dict[str, _Converter] = {
    "str": _Converter(r"[^/]+", fits=_SLASH.isdisjoint),
    "int": _Converter(r"[0-9]+", int, fits=_ASCII_DIGITS.issuperset),
    "float": _Converter(r"[0-9]+(?:\.[0-9]+)?", _to_finite_float),
    "path": _Converter(r".+", safe="/"),
    "slug": _Converter(r"[-a-zA-Z0-9_]+"),
    "uuid": _Converter(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                       r"[0-9a-fA-F]{12}", _to_uuid),
}
_PLACEHOLDER = _lazy_regex(r"<(?:(?P<converter>[A-Za-z_]\w*):)?(?P<name>[A-Za-z_]\w*)>")
# Every HTTP method a view with methods=None accepts; OPTIONS is answered for it.
_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A WebSocket route's only "method": not an HTTP token (":"), so no HTTP request has it.
_WEBSOCKET = "WEBSOCKET:"


class Route:
    """One compiled route: its pattern, view, methods and the regex that matches paths."""

    __slots__ = (
        "_conversions",
        "_parts",
        "_positional",
        "converters",
        "kwargs",
        "literal",
        "literal_prefix",
        "match",
        "methods",
        "name",
        "pattern",
        "regex",
        "view",
    )

    def __init__(self, pattern: str, view: Callable[..., Any],
                 methods: Iterable[str] | None = None, name: str | None = None,
                 kwargs: Mapping[str, Any] | None = None, websocket: bool = False) -> None:
        if websocket:
            methods = (_WEBSOCKET,)
        if not callable(view):
            raise ImproperlyConfigured(f"The view of route {pattern!r} is not callable: {view!r}")
        self.pattern = pattern
        self.view = view
        self.methods = self._allowed_methods(view, methods)
        self.name = name
        self.kwargs = dict(kwargs or {})
        self.converters: dict[str, _Converter] = {}
        self.literal: str | None = None
        self.literal_prefix = ""
        self._parts: list[tuple[str, str | None]] = []
        self._positional = False
        self._conversions: list[tuple[str, Callable[[str], Any]]] = []
        if pattern.startswith("^"):
            self._compile_regex(pattern)
        else:
            self._compile_template(pattern)
        self.match = self._make_matcher()

    @staticmethod
    def _allowed_methods(view: Any, methods: Iterable[str] | None) -> frozenset[str] | None:
        if methods is None:
            view_class = getattr(view, "view_class", None)
            if view_class is None:
                return None
            methods = view_class.allowed_methods()
        upper = {m.upper() for m in methods}
        if "GET" in upper:
            upper.add("HEAD")
        return frozenset(upper)

    def _compile_regex(self, pattern: str) -> None:
        import re
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ImproperlyConfigured(f"Route {pattern!r} is not a valid regex: {exc}") from None
        # fullmatch, so that "$" cannot accept a trailing newline ("/admin\n").
        self.regex = regex
        self._positional = not regex.groupindex

    def _compile_template(self, pattern: str) -> None:
        import re
        if not pattern.startswith("/"):
            raise ImproperlyConfigured(f"Route {pattern!r} must start with '/' (or '^')")
        regex, position = [], 0
        for match in _PLACEHOLDER.finditer(pattern):
            converter_name = match.group("converter") or "str"
            name = match.group("name")
            converter = _CONVERTERS.get(converter_name)
            if converter is None:
                raise ImproperlyConfigured(
                    f"Route {pattern!r} uses unknown converter {converter_name!r}; "
                    f"use one of {', '.join(_CONVERTERS)}")
            if name in self.converters:
                raise ImproperlyConfigured(f"Route {pattern!r} names {name!r} twice")
            literal = pattern[position:match.start()]
            self._parts.append((literal, None))
            self._parts.append((name, converter_name))
            regex.append(re.escape(literal) + f"(?P<{name}>{converter.regex})")
            self.converters[name] = converter
            position = match.end()
        tail = pattern[position:]
        self._parts.append((tail, None))
        regex.append(re.escape(tail))
        self.regex = re.compile("".join(regex))
        # PERF: str placeholders need no conversion; only the others are looped over.
        self._conversions = [(name, converter.to_python)
                             for name, converter in self.converters.items()
                             if converter.to_python is not str]
        if not self.converters:
            self.literal = pattern
        # The whole path segments before the first placeholder ("/api/users/" for
        # "/api/users/<int:id>"): the resolver's bucket key.
        prefix = self._parts[0][0]
        self.literal_prefix = prefix[:prefix.rfind("/") + 1] if prefix.count("/") >= 2 else ""

    def _make_matcher(self) -> Callable[[str], tuple[tuple[Any, ...], dict[str, Any]] | None]:
        """Build `match(path)`: the view's arguments when `path` matches, else None.

        PERF: a closure over what it needs, built once, so a request pays for no attribute
        lookups; a literal route only compares strings.
        """
        fullmatch, extra, conversions = self.regex.fullmatch, self.kwargs, self._conversions
        literal = self.literal
        if literal is not None:
            return lambda path: ((), dict(extra)) if path == literal else None
        tail_matcher = self._make_tail_matcher()
        if tail_matcher is not None:
            return tail_matcher
        if self._positional:
            def match_positional(path: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
                found = fullmatch(path)
                return None if found is None else (found.groups(), dict(extra))
            return match_positional

        def match(path: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            found = fullmatch(path)
            if found is None:
                return None
            kwargs = found.groupdict()
            try:
                for name, to_python in conversions:
                    kwargs[name] = to_python(kwargs[name])
            except ValueError:
                # e.g. an int past Python's digit limit: not a path this route serves.
                return None
            if extra:
                kwargs.update(extra)
            return (), kwargs
        return match

    def _make_tail_matcher(self) -> Callable[[str], tuple[tuple[Any, ...],
                                                          dict[str, Any]] | None] | None:
        """For "/prefix/<int:id>" (one placeholder, last, with a plain test): a matcher that
        slices the path instead of running the regex (PERF: half of a match's cost)."""
        if self._positional or len(self._parts) != 3 or self._parts[2][0]:
            return None
        (prefix, _), (name, _), _ = self._parts
        converter = self.converters[name]
        fits, to_python, extra, start = converter.fits, converter.to_python, self.kwargs, len(
            prefix)
        if fits is None:
            return None

        def match_tail(path: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            value = path[start:]
            if not value or not path.startswith(prefix) or not fits(value):
                return None
            try:
                kwargs = {name: to_python(value)}
            except ValueError:  # an int past Python's digit limit, as in match()
                return None
            if extra:
                kwargs.update(extra)
            return (), kwargs
        return match_tail

    def accepts(self, method: str) -> bool:
        methods = self.methods
        if methods is None:
            return method != "OPTIONS" and method != _WEBSOCKET
        return method in methods

    def allowed(self) -> Iterable[str]:
        if self.methods is None:
            return _ALL_METHODS
        return self.methods if _WEBSOCKET in self.methods else self.methods | {"OPTIONS"}

    def build(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """The path for these values, or None when they do not fit this route."""
        if self.pattern.startswith("^"):
            return _reverse_regex(self, args, kwargs)
        names = [name for name, converter in self._parts if converter]
        if args:
            if kwargs or len(args) != len(names):
                return None
            kwargs = dict(zip(names, args, strict=True))
        if set(kwargs) != set(names):
            return None
        out = []
        try:
            for text, converter in self._parts:
                out.append(_CONVERTERS[converter].to_url(kwargs[text]) if converter else text)
        except ValueError:
            return None
        return "".join(out)

    def __repr__(self) -> str:
        return f"<Route {self.pattern!r} -> {getattr(self.view, '__name__', self.view)!r}>"


_REGEX_GROUP = _lazy_regex(r"\((?:\?P<(\w+)>)?([^()]*)\)")


def _reverse_regex(route: Route, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """Reverse a raw-regex route when it is literal text around simple groups."""
    import re
    pattern = route.pattern[1:]
    if pattern.endswith("$"):
        pattern = pattern[:-1]
    values = list(args)
    out, position = [], 0
    for group in _REGEX_GROUP.finditer(pattern):
        out.append(_regex_literal(pattern[position:group.start()]))
        name = group.group(1)
        if name is not None and name in kwargs:
            value = kwargs[name]
        elif name is None and values:
            value = values.pop(0)
        else:
            return None
        text = str(value)
        if re.fullmatch(group.group(2), text) is None:
            return None
        out.append(quote(text, safe=""))
        position = group.end()
    out.append(_regex_literal(pattern[position:]))
    if None in out or values:
        return None
    path = "".join(out)  # type: ignore[arg-type]
    return path if route.match(unquote_to_bytes(path).decode("utf-8", "replace")) else None


def _regex_literal(text: str) -> str | None:
    import re
    if re.search(r"(?<!\\)[.*+?\[\]{}|^$]", text):
        return None
    return re.sub(r"\\(.)", r"\1", text)


def _plain_methods(item: Route) -> frozenset[str]:
    """The usual methods `item` accepts, for the resolver's literal-path shortcut; any
    other method (or a Route subclass) takes the general path, which asks `accepts()`."""
    if type(item) is not Route:
        return frozenset()
    return frozenset(m for m in (*_ALL_METHODS, *(item.methods or ())) if item.accepts(m))


def route(pattern: str, view: Callable[..., Any], methods: Iterable[str] | None = None,
          name: str | None = None, kwargs: Mapping[str, Any] | None = None,
          websocket: bool = False) -> Route:
    """A route for an App's `routes` list: `route("/items/<int:id>", item, name="item")`;
    `websocket=True` for an `async def handler(ws, ...)`."""
    return Route(pattern, view, methods, name, kwargs, websocket)


def include(prefix: str, routes: Iterable[Route | Iterable[Route]]) -> list[Route]:
    """The routes with `prefix` put in front of their patterns; an item of a routes list."""
    import re
    prefix = prefix.rstrip("/")
    included = []
    for item in _flatten_routes(routes):
        if item.pattern.startswith("^"):
            pattern = "^" + re.escape(prefix) + item.pattern[1:]
        else:
            pattern = prefix + item.pattern
        included.append(type(item)(pattern, item.view, item.methods, item.name, item.kwargs))
    return included


def _flatten_routes(routes: Iterable[Any]) -> Iterator[Route]:
    for item in routes:
        if isinstance(item, Route):
            yield item
        elif isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
            yield from _flatten_routes(item)
        else:
            raise ImproperlyConfigured(f"Not a route: {item!r}; use route(...) or include(...)")


class ResolverMatch:
    """What the resolver found: the view, its arguments, the route's name and pattern."""

    __slots__ = ("args", "func", "kwargs", "route", "route_name")

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], route_name: str | None, route: str) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.route_name = route_name
        self.route = route

    url_name = property(lambda self: self.route_name)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.func, self.args, self.kwargs))

    def __repr__(self) -> str:
        return (f"ResolverMatch(func={getattr(self.func, '__name__', self.func)}, "
                f"args={self.args!r}, kwargs={self.kwargs!r}, route_name={self.route_name!r}, "
                f"route={self.route!r})")


class Resolver:
    """Finds the route for a path. Compiled once: a dict of literal paths, and the other
    routes bucketed by the whole literal segments they start with ("/api/users/"). A
    bucket also holds, in registration order, the routes of shorter prefixes of its key
    and those that could match any path (a raw regex, a leading placeholder). A request
    tries the bucket of its longest known prefix only, so dispatch cost does not grow
    with the number of routes."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._static: dict[str, list[Route]] = {}
        self._by_name: dict[str, Route] = {}
        by_prefix: dict[str, list[Route]] = {"": []}
        # Registration order lives here, not on the Route: one Route may serve two Apps.
        self._order = {item: index for index, item in reversed(list(enumerate(self.routes)))}
        for item in self.routes:
            if item.name:
                self._name_route(item)
            if item.literal is not None:
                self._static.setdefault(item.literal, []).append(item)
            else:
                by_prefix.setdefault(item.literal_prefix, []).append(item)
        self._anywhere = by_prefix.pop("")
        # Every prefix of a key is a key too, so the lookup can walk down the path's
        # segments and stop at the first miss: the last hit is the longest prefix.
        keys = {key[:end + 1] for key in by_prefix for end in range(1, len(key))
                if key[end] == "/"}
        self._buckets = {prefix: self._bucket(prefix, by_prefix) for prefix in keys}
        # A literal path whose first candidate is its own route resolves with one lookup.
        self._plain_methods = {item: _plain_methods(item) for item in self.routes}
        self.first_static = {path: (routes[0], self._plain_methods[routes[0]])
                             for path, routes in self._static.items()
                             if self.candidates(path)[0] is routes[0]
                             and not any(r.match(path) for r in self.candidates(path)
                                         if self._order[r] < self._order[routes[0]])}

    def _name_route(self, item: Route) -> None:
        # Django lets reverse() pick among routes of one name; we refuse: a link silently
        # going to the other page is worse than an error at start-up.
        first = self._by_name.setdefault(item.name or "", item)
        if first is not item:
            raise ImproperlyConfigured(
                f"Two routes are named {item.name!r}: {first.pattern!r} and "
                f"{item.pattern!r}; give each route its own name")

    def _bucket(self, prefix: str, by_prefix: dict[str, list[Route]]) -> list[Route]:
        shorter = [key for key in by_prefix if prefix.startswith(key)]
        routes = self._anywhere + [r for key in shorter for r in by_prefix[key]]
        return sorted(routes, key=self._order.__getitem__)

    def candidates(self, path: str) -> list[Route]:
        """The routes that may match `path`, in registration order."""
        buckets = self._buckets
        dynamic = self._anywhere
        end = path.find("/", 1)
        while end > 0 and (found := buckets.get(path[:end + 1])) is not None:
            dynamic = found
            end = path.find("/", end + 1)
        static = self._static.get(path)
        if static is None:
            return dynamic
        if not dynamic:
            return static
        return sorted(static + dynamic, key=self._order.__getitem__)

    def resolve(self, path: str, method: str) -> tuple[Route, tuple[Any, ...], dict[str, Any]]:
        """The first route matching path and method; Http404, or MethodNotAllowed with the
        methods the path does allow."""
        # PERF: a list ([] is one opcode, set() a call); the methods are joined on a miss.
        allowed: list[Iterable[str]] = []
        plain_methods = self._plain_methods
        # PERF: the path's own directory ("/api/users/" of "/api/users/42") is most often a
        # bucket's key, and then the longest: its routes, without the walk of candidates().
        candidates = self._buckets.get(path[:path.rfind("/") + 1])
        if candidates is None or path in self._static:
            candidates = self.candidates(path)
        for item in candidates:
            found = item.match(path)
            if found is None:
                continue
            # PERF: the usual methods are looked up in a set made at start-up.
            if method in plain_methods[item] or item.accepts(method):
                return item, found[0], found[1]
            allowed.append(item.allowed())
        if allowed:
            raise MethodNotAllowed(set().union(*allowed))
        raise Http404()

    def reverse(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        item = self._by_name.get(name)
        if item is None:
            raise NoReverseMatch(f"No route is named {name!r}")
        path = item.build(args, kwargs)
        if path is None:
            raise NoReverseMatch(f"Route {name!r} ({item.pattern!r}) does not fit "
                                 f"args={tuple(args)!r} kwargs={dict(kwargs)!r}")
        # "//host" would be read as another site by a browser (a path converter value
        # starting with "/"): keep it a path.
        return "/%2F" + path[2:] if path.startswith("//") else path

    def describe(self) -> str:
        """A listing of the compiled routes, in the order they are tried."""
        lines = []
        for item in self.routes:
            kind = "static" if item.literal is not None else (
                f"bucket {item.literal_prefix}" if item.literal_prefix else "any path")
            methods = ",".join(sorted(item.methods)) if item.methods else "*"
            view = getattr(item.view, "__qualname__", repr(item.view))
            lines.append(f"{item.pattern:40} {methods:20} {kind:20} {view}"
                         + (f" name={item.name}" if item.name else ""))
        return "\n".join(lines)


def static(prefix: str, directory: str | os.PathLike[str], name: str | None = None) -> Route:
    """A route serving the files under `directory` at `prefix`: never a file outside it,
    with ETag, Last-Modified, 304 and a single Range."""
    root = os.path.realpath(directory)

    def serve_static(request: Request, filename: str) -> HttpResponse:
        path = _safe_join(root, filename)
        try:
            stat = os.stat(path)
        except (OSError, ValueError):
            raise Http404() from None
        import stat as stat_module
        if not stat_module.S_ISREG(stat.st_mode):
            raise Http404()
        return _static_response(request, path, stat)

    serve_static.__name__ = serve_static.__qualname__ = f"static({prefix!r})"
    return Route(prefix.rstrip("/") + "/<path:filename>", serve_static, ["GET"], name)


def _safe_join(root: str, filename: str) -> str:
    """The real path of `filename` under `root`; Http404 for anything that would leave it
    (`..`, absolute paths, backslashes, NUL, symlinks pointing out)."""
    parts = filename.split("/")
    if "\\" in filename or "\x00" in filename or any(p in ("..", ".") for p in parts):
        raise Http404()
    if os.path.isabs(filename) or any(p != p.strip() for p in parts if p) or ":" in parts[0]:
        raise Http404()
    path = os.path.realpath(os.path.join(root, *[p for p in parts if p]))
    if os.path.commonpath([root, path]) != root or path == root:
        raise Http404()
    return path


def _static_response(request: Request, path: str, stat: os.stat_result) -> HttpResponse:
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    last_modified = _http_date(stat.st_mtime)
    validators = {"ETag": etag, "Last-Modified": last_modified, "Accept-Ranges": "bytes"}
    if _not_modified(request.environ, etag, stat.st_mtime):
        return HttpResponse(status=304, headers=validators)  # no Content-Type: see _BODILESS
    byte_range = _requested_range(request.environ, etag, stat.st_size)
    if byte_range is not None and not byte_range:
        return HttpResponse(status=416, headers={"Content-Range": f"bytes */{stat.st_size}"})
    response = FileResponse(path, headers=validators)
    if byte_range is not None:
        response.status_code = 206
        response["Content-Range"] = f"bytes {byte_range.start}-{byte_range.stop - 1}/{stat.st_size}"
        response["Content-Length"] = str(len(byte_range))
        response.file.seek(byte_range.start)
        response.streaming_content = _read_span(response.file, len(byte_range))
    return response


def _read_span(file: Any, length: int, block_size: int = 64 * 1024) -> Iterator[bytes]:
    while length > 0:
        chunk = file.read(min(block_size, length))
        if not chunk:
            return
        length -= len(chunk)
        yield chunk


def _not_modified(environ: Mapping[str, Any], etag: str, mtime: float) -> bool:
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        tags = {tag.strip(" \t").removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag in tags
    if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if if_modified_since:
        since = _parse_http_date(if_modified_since)
        return since is not None and int(mtime) <= since
    return False


def _parse_http_date(value: str) -> float | None:
    from email.utils import parsedate_to_datetime
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


_RANGE = _lazy_regex(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


def _requested_range(environ: Mapping[str, Any], etag: str, size: int) -> range | None:
    """The one byte range asked for; None to send the whole file (no Range, a stale
    If-Range, several ranges or a malformed one); an empty range when unsatisfiable (416)."""
    header = environ.get("HTTP_RANGE")
    if not header:
        return None
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range is not None and if_range.strip(" \t") != etag:
        return None
    match = _RANGE.fullmatch(header.strip(" \t").replace(" ", ""))
    if match is None or (match.group(1) == "" and match.group(2) == ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        return range(max(size - int(last), 0), size)
    start = int(first)
    if last and int(last) < start:
        return range(0)
    return range(start, min(int(last) + 1, size) if last else size)


# ---------------------------------------------------------------- forwarding

class _BadGateway(HttpError):
    """The upstream could not be reached or sent an answer that cannot be forwarded."""

    status = 502


class _GatewayTimeout(HttpError):
    """The upstream was silent for the proxy's `timeout`."""

    status = 504


# RFC 9110 7.6.1: these speak of one connection (the built-in server refuses them from an
# app too), so they never cross the proxy, nor do names listed in Connection. "Proxy" is
# httpoxy's header; "trailers" is how wsgiref spells Trailer, refused from an app.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailer", "transfer-encoding", "upgrade"})
_NOT_FORWARDED = _HOP_BY_HOP | {"proxy", "trailers"}
# Request headers the proxy writes itself: Host and the body's framing; Expect was the front
# server's to answer; the client's own Forwarded and X-Forwarded-* are not trusted (SPEC).
_SET_BY_PROXY = frozenset({"host", "content-length", "expect", "forwarded", "x-forwarded-for",
                           "x-forwarded-proto", "x-forwarded-host"})
_OBS_FOLD = _lazy_regex(r"\r?\n[ \t]+")


class _ForwardingRoute(Route):
    """A route taking every method, OPTIONS too: the upstream decides what it allows."""

    __slots__ = ()

    def accepts(self, method: str) -> bool:
        return True


class _ForwardedResponse(StreamingHttpResponse):
    """The upstream's answer, streamed. Its Set-Cookie headers are kept one by one, as
    sent: a response's headers hold one value per name."""

    upstream_cookies: Sequence[str] = ()

    def wsgi_headers(self) -> list[tuple[str, str]]:
        headers = super().wsgi_headers()
        headers.extend(("Set-Cookie", cookie) for cookie in self.upstream_cookies)
        return headers


class _Upstream:
    """Where a proxy() route forwards to, checked once: scheme, host, port, path prefix."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        try:
            self.port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"proxy upstream {url!r} has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImproperlyConfigured(f"proxy upstream {url!r} must be an http:// or "
                                       "https:// URL with a host")
        if "@" in parts.netloc or parts.query or parts.fragment:
            raise ImproperlyConfigured(f"proxy upstream {url!r} must not hold credentials, "
                                       "a query or a fragment")
        self.url, self.timeout, self.https = url, timeout, parts.scheme == "https"
        self.hostname, self.netloc, self.path = parts.hostname, parts.netloc, parts.path
        self._ssl_context: Any = None

    def connection(self) -> Any:
        """A new http.client connection (not yet connected): one per request."""
        import http.client
        if not self.https:
            return http.client.HTTPConnection(self.hostname, self.port, timeout=self.timeout)
        if self._ssl_context is None:  # loading the CA certificates costs milliseconds
            import ssl
            self._ssl_context = ssl.create_default_context()
        return http.client.HTTPSConnection(self.hostname, self.port, timeout=self.timeout,
                                           context=self._ssl_context)

    def target(self, rest: str | None, query_string: str) -> str:
        """The request-target: the upstream's path, the rest of the request's path quoted,
        the query as the client sent it (bytes outside ASCII percent-encoded)."""
        if rest is None:  # the prefix itself: the upstream's path as written
            path = self.path or "/"
        else:
            path = self.path.rstrip("/") + quote(rest, safe=_PATH_SAFE)
        if not query_string:
            return path
        try:
            raw = query_string.encode("latin-1")  # PEP 3333: the bytes, as latin-1 text
        except UnicodeEncodeError:
            raw = query_string.encode("utf-8")
        return path + "?" + quote(raw, safe=_PATH_SAFE + "?%")


def proxy(prefix: str, upstream: str, *, timeout: float = 30,
          preserve_host: bool = False) -> Route:
    """A route forwarding every request under `prefix` to `upstream` (an http:// or https://
    URL whose path is kept in front) and streaming its answer back: 502 when the upstream
    cannot be reached, 504 when it is silent for `timeout` seconds."""
    import re
    if not prefix.startswith("/"):
        raise ImproperlyConfigured(f"proxy prefix {prefix!r} must start with '/'")
    target = _Upstream(upstream, timeout)

    def forward(request: Request, rest: str | None = None) -> HttpResponse:
        body, length = _request_body(request)  # a body too big is refused before connecting
        headers = _upstream_headers(request, target.netloc, preserve_host)
        if length is not None:
            headers["Content-Length"] = str(length)
        connection = target.connection()
        try:
            answer = _send_upstream(connection, request.method,
                                    target.target(rest, request.query_string), headers, body,
                                    target.url)
            return _forwarded_response(answer, connection, target.url)
        except BaseException:
            connection.close()
            raise

    forward.__name__ = forward.__qualname__ = f"proxy({prefix!r})"
    # "/api" itself, and everything below "/api/" (not "/apix"); [\s\S]: a path may hold "\n".
    return _ForwardingRoute("^" + re.escape(prefix.rstrip("/")) + r"(?P<rest>/[\s\S]*)?",
                            forward)


def _request_body(request: Request) -> tuple[Iterable[bytes] | None, int | None]:
    """The body to send and its length (None: sent chunked), read from `request.stream` so
    that max_body_size holds: a Content-Length over it is a 413 here, before connecting; a
    longer chunked body is a 413 mid-way, so the upstream never receives it whole."""
    if "body" in request.__dict__ or request.__dict__.get("_body_streamed"):
        data = request.body  # a middleware read it already
        return ([data] if data else None), len(data)
    stream = request.stream
    length = request.content_length
    if length is not None:
        return (_read_chunks(stream) if length else None), length
    first = stream.read(65536)  # a server's de-chunked input, or no body at all
    return (_read_chunks(stream, first) if first else None), None


def _read_chunks(stream: LimitedStream, first: bytes = b"") -> Iterator[bytes]:
    if first:
        yield first
    while chunk := stream.read(65536):
        yield chunk


def _connection_tokens(value: str) -> frozenset[str]:
    """The header names a Connection header lists, lowercased."""
    return frozenset(token.strip(" \t").lower() for token in value.split(",")) - {""}


def _is_hop_by_hop(name: str, named: frozenset[str]) -> bool:
    return name in _NOT_FORWARDED or name.startswith("proxy-") or name in named


def _upstream_headers(request: Request, upstream_host: str,
                      preserve_host: bool) -> dict[str, str]:
    """The client's headers less hop-by-hop ones, with Host and X-Forwarded-* set. The
    client's X-Forwarded-For is replaced, not appended to: it could be forged."""
    named = _connection_tokens(request.environ.get("HTTP_CONNECTION", ""))
    headers = {name: value for name, value in request.headers.items()
               if value and not _is_hop_by_hop(name.lower(), named)
               and name.lower() not in _SET_BY_PROXY}
    host = request.host  # checked against allowed_hosts: a forged Host goes no further
    headers["Host"] = host if preserve_host else upstream_host
    remote_addr = request.environ.get("REMOTE_ADDR")
    if remote_addr:
        headers["X-Forwarded-For"] = remote_addr
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = host
    headers["Connection"] = "close"  # one connection per request
    return headers


def _send_upstream(connection: Any, method: str, target: str, headers: dict[str, str],
                   body: Iterable[bytes] | None, url: str) -> Any:
    """The upstream's http.client response: 502 when it cannot be reached or answers what
    is not HTTP, 504 when it is silent for the timeout. The client's own errors in the body
    (413, 400) pass through as they are."""
    import http.client
    try:
        connection.connect()
    except OSError as exc:  # TimeoutError is one
        raise _upstream_error(url, exc) from None
    try:
        connection.request(method, target, body, headers)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            raise _upstream_error(url, exc) from None
        # The upstream may have answered early (a 413 of its own) and closed: read that.
    try:
        return connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise _upstream_error(url, exc) from None


def _upstream_error(url: str, exc: BaseException) -> HttpError:
    """502 or 504 with an empty message (the page says nothing of the upstream); the cause
    goes to the log, for the operator."""
    _log.warning("proxy: upstream %s failed: %s", url, _loggable(repr(exc)))
    return _GatewayTimeout() if isinstance(exc, TimeoutError) else _BadGateway()


def _forwarded_response(answer: Any, connection: Any, url: str) -> HttpResponse:
    """The upstream's status, reason and headers (less hop-by-hop ones), its body streamed
    as it arrives; closing the response closes the connection."""
    try:
        if answer.status < 200:  # a 1xx that http.client did not skip (101): not relayed
            raise BadHeaderError(f"informational status {answer.status}")
        headers, cookies = _answer_headers(answer)
        response = _ForwardedResponse(_relay(answer), answer.status, headers=headers)
        if "content-type" not in {name.lower() for name in headers}:
            # What a missing type means (RFC 9110 8.3); not the text/html of a view.
            response["Content-Type"] = "application/octet-stream"
        if answer.reason:
            response.reason_phrase = answer.reason
    except BadHeaderError as exc:
        answer.close()
        raise _upstream_error(url, exc) from None
    response.upstream_cookies = cookies
    response.add_closer(answer.close)
    response.add_closer(connection.close)
    return response


def _answer_headers(answer: Any) -> tuple[dict[str, str], list[str]]:
    """The upstream's headers less hop-by-hop ones, a repeated field joined into one list
    (RFC 9110 5.3), and its Set-Cookie values apart; BadHeaderError for what cannot be sent."""
    named = _connection_tokens(", ".join(answer.msg.get_all("Connection") or ()))
    headers: dict[str, tuple[str, str]] = {}
    cookies = []
    for name, raw_value in answer.msg.items():
        lower = name.lower()
        if _is_hop_by_hop(lower, named) or (lower == "content-length" and answer.chunked):
            continue
        value = check_header(name, _OBS_FOLD.sub(" ", raw_value))[1]  # RFC 9112 5.2
        if lower == "content-length" and (not (value.isdigit() and value.isascii())
                                          or headers.get(lower, (name, value))[1] != value):
            raise BadHeaderError(f"Content-Length {value!r}")  # two framings: smuggling
        if lower == "set-cookie":
            cookies.append(value)
        elif lower in headers and lower != "content-length":  # the same length twice: one
            headers[lower] = (headers[lower][0], f"{headers[lower][1]}, {value}")
        else:
            headers[lower] = (name, value)
    return dict(headers.values()), cookies


def _relay(answer: Any, chunk_size: int = 65536) -> Iterator[bytes]:
    """The upstream's body as it arrives: read1 returns what is there, not a full chunk."""
    while chunk := answer.read1(chunk_size):
        yield chunk


# ---------------------------------------------------------------- views

class View:
    """A class-based view: one method per HTTP verb (`get`, `post`...), a new instance per
    request. Route it with `MyView.as_view(**initkwargs)`."""

    http_method_names = ("get", "post", "put", "patch", "delete", "head", "options", "trace")
    request: Request
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    @classmethod
    def allowed_methods(cls) -> list[str]:
        methods = [m.upper() for m in cls.http_method_names if hasattr(cls, m)]
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")
        return methods

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        for key in initkwargs:
            if key in cls.http_method_names or not hasattr(cls, key):
                raise TypeError(f"{cls.__name__}.as_view() got an unexpected argument {key!r}")

        def view(request: Request, *args: Any, **kwargs: Any) -> Any:
            self = cls(**initkwargs)
            self.request, self.args, self.kwargs = request, args, kwargs
            return self.dispatch(request, *args, **kwargs)

        view.view_class = cls  # type: ignore[attr-defined]
        view.__name__ = view.__qualname__ = cls.__name__
        view.__doc__ = cls.__doc__
        # As Django's view_is_async: a view whose handlers are all `async def` is async, so
        # under ASGI it runs on the event loop and what it returns is awaited.
        handlers = [getattr(cls, name) for name in cls.http_method_names if hasattr(cls, name)]
        if handlers and all(_is_async(handler) for handler in handlers):
            markcoroutinefunction(view)
        return view

    def dispatch(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        method = request.method.lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        if handler is None and method == "head":
            handler = getattr(self, "get", None)
        if handler is None:
            raise MethodNotAllowed(self.allowed_methods())
        return handler(request, *args, **kwargs)


# ---------------------------------------------------------------- databases
# All this section asks of `App(database=...)` is DB-API 2: a connection is inside a
# transaction once the driver opens one, and commit() or rollback() ends it. So any driver
# works; when sqlite3 opens its transactions is said in README.md ("Databases").

# One request holds one connection at a time per thread; a second idle one covers a
# request made from inside another (a test client in a view).
_IDLE_CONNECTIONS_PER_THREAD = 2


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # already broken: there is nothing more to release
        pass


class _Lease:
    """A request's hold on a pooled connection; `close()` (from Request.close, when the
    response closes) gives it back, or closes it when its transaction failed."""

    __slots__ = ("connection", "failed", "idle", "thread")

    def __init__(self, connection: Any, idle: list[Any]) -> None:
        self.connection = connection
        self.idle: list[Any] | None = idle  # the pool of the thread that opened it
        self.thread = _thread.get_ident()
        self.failed = False

    def close(self) -> None:
        idle, self.idle = self.idle, None
        if idle is None or self.thread != _thread.get_ident():
            # Not from its own thread (sqlite3 refuses that): dropped, never pooled, and
            # the driver closes it (rolling back) with the last reference, held here.
            self.connection = None
            return
        if not self.failed:
            try:
                self.connection.rollback()  # what the view left open: never pooled mid-way
            except Exception:
                self.failed = True
        if self.failed or len(idle) >= _IDLE_CONNECTIONS_PER_THREAD:
            _close_quietly(self.connection)
        else:
            idle.append(self.connection)


class _ConnectionPool:
    """An App's idle connections, kept per thread: a request runs in one thread, and a
    sqlite3 connection may only be used by the thread that opened it."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.connect = connect
        self.local = _thread._local()

    def lease(self) -> _Lease:
        idle = getattr(self.local, "idle", None)
        if idle is None:
            idle = self.local.idle = []
        return _Lease(idle.pop() if idle else self.connect(), idle)


def _pool_of(app: App, connect: Callable[[], Any]) -> _ConnectionPool:
    with app._lock:  # two first requests at once must not make two pools
        pool = app._connection_pool
        if pool is None or pool.connect is not connect:
            pool = app._connection_pool = _ConnectionPool(connect)
        return pool


def _lease_connection(request: Request) -> _Lease:
    """Open `request.db` (the Request property calls this once per request)."""
    app = request.app
    connect = None if app is None else app.database
    if app is None or connect is None:
        raise ImproperlyConfigured(
            "request.db needs a database: App(database=...), a function returning a DB-API "
            "connection, e.g. App(database=functools.partial(sqlite3.connect, 'app.db'))")
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:
        # Django's SynchronousOnlyOperation: a blocking call here stalls every request.
        raise RuntimeError(
            "request.db was used on the event loop (an async view): a DB-API connection "
            "blocks. Write the view with def (ASGI runs it in a worker thread)")
    pool = app._connection_pool
    if pool is None or pool.connect is not connect:
        pool = _pool_of(app, connect)
    lease = pool.lease()
    request.__dict__["_db_lease"] = lease
    request._files_to_close = [*request._files_to_close, lease]
    return lease


def _give_back_connection(request: Request | None) -> None:
    """Give request.db back now, from the thread that opened it: under ASGI each sync call
    runs in some pool thread, and the response closes on the loop's thread, where sqlite3
    would refuse the connection. The next use of request.db leases one again."""
    lease = None if request is None else request.__dict__.pop("_db_lease", None)
    if lease is not None:
        lease.close()


def non_atomic_requests(view: _F) -> _F:
    """Decorator: with `App(atomic_requests=True)`, run this view (a function, or a View
    class) outside a transaction, as Django's does."""
    view._non_atomic_requests = True  # type: ignore[attr-defined]
    return view


def _atomic_view(app: App, view: Callable[..., Any]) -> Callable[..., Any]:
    """`view` run in one transaction on request.db: committed when it returns a response,
    rolled back when it raises (App.make_view_atomic, per request, like Django)."""
    if getattr(view, "_non_atomic_requests", False) or getattr(
            getattr(view, "view_class", None), "_non_atomic_requests", False):
        return view
    if _is_async(view):
        raise ImproperlyConfigured(
            f"The view {_name_of(view)} is async: atomic_requests cannot run it in a "
            "transaction (a DB-API connection blocks the event loop). Write it with def, or "
            "mark it @non_atomic_requests")

    def atomic_view(request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
            if not isinstance(response, HttpResponse):
                response = app.make_response(response, view)
        except HttpError:
            _end_transaction(request, commit=False, failed=False)  # the connection is fine
            raise
        except BaseException:
            _end_transaction(request, commit=False, failed=True)
            raise
        _end_transaction(request, commit=True, failed=False)
        return response

    return atomic_view


def _end_transaction(request: Request, commit: bool, failed: bool) -> None:
    """Commit or roll back request.db, if the view opened it; a connection whose commit
    or rollback failed, or whose view failed, is closed instead of pooled."""
    lease: _Lease | None = request.__dict__.get("_db_lease")
    if lease is None:
        return
    lease.failed = lease.failed or failed
    try:
        if commit:
            lease.connection.commit()
        else:
            lease.connection.rollback()
    except Exception:
        lease.failed = True  # closing it discards the transaction
        if commit:
            raise
        # The view's own exception is the one to report.
        _log.exception("Rolling back request.db failed")


# ---------------------------------------------------------------- middleware and App

# Coroutine functions are told apart without importing inspect or asyncio (import time):
# the code flag for `async def`, or a mark left by markcoroutinefunction() (ours and
# Python 3.12's inspect use the same attribute; asgiref's older mark is `_is_coroutine`).
_CO_COROUTINE = 0x80
_COROUTINE_MARK = object()


def _inspect_mark() -> Any:
    """The mark of inspect.markcoroutinefunction (Python 3.12+), if inspect is loaded."""
    inspect = sys.modules.get("inspect")
    return getattr(inspect, "_is_coroutine_marker", None) or getattr(
        inspect, "_is_coroutine_mark", None)


def markcoroutinefunction(func: _F) -> _F:
    """Mark `func` (a function, or a middleware instance) as async, so the chain builder
    awaits what it returns: Django's `markcoroutinefunction`. From Python 3.12 this is
    inspect's own mark, so inspect.iscoroutinefunction() agrees."""
    import inspect
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        return mark(func)  # type: ignore[no-any-return]
    # A bound method takes no attributes: its function carries the mark, as inspect does.
    target: Any = getattr(func, "__func__", func)
    target._is_coroutine_marker = _COROUTINE_MARK
    return func


def _is_async(func: Any) -> bool:
    """Whether calling `func` returns an awaitable: `async def`, marked, or an object whose
    `__call__` is `async def`; functools.partial and bound methods are looked through."""
    while True:
        marker = getattr(func, "_is_coroutine_marker", None)
        if marker is not None and (marker is _COROUTINE_MARK or marker is _inspect_mark()):
            return True
        if getattr(func, "_is_coroutine", None) is not None and "asyncio" in sys.modules:
            return func._is_coroutine is sys.modules["asyncio"].coroutines._is_coroutine
        inner = getattr(func, "__func__", None) or getattr(func, "func", None)
        if inner is None or inner is func:
            break
        func = inner
    code = getattr(func, "__code__", None)
    if code is None and not isinstance(func, type):
        call = next((k.__dict__["__call__"] for k in type(func).__mro__
                     if "__call__" in k.__dict__), None)
        code = getattr(call, "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


# Sync code called from the ASGI server's worker threads finds the server's loop here
# (_to_thread sets it in the copy of the caller's context the thread runs in), so a
# coroutine it must wait for runs there.
_event_loop: ContextVar[Any] = ContextVar("microhandler_event_loop", default=None)
_thread_state = _thread._local()
# The queue of a thread that waits for a coroutine (a sync middleware's, under ASGI): sync
# work that coroutine offloads runs on that thread, asgiref's CurrentThreadExecutor. Were
# it sent to the pool, each waiting layer would hold a pool thread while the work it waits
# for needs another, and a busy server would deadlock.
_waiting_thread: ContextVar[Any] = ContextVar("microhandler_waiting_thread", default=None)
# Where a thread call notes the coroutines it waits for, so that cancelling the call (the
# client left) cancels them too.
_awaited_futures: ContextVar[list[Any] | None] = ContextVar("microhandler_awaited",
                                                            default=None)


def _await_from_sync(awaitable: Any) -> Any:
    """Wait for `awaitable` from sync code: on the ASGI server's loop when called from one
    of its worker threads (doing the sync work it hands back meanwhile), else on this
    thread's own loop (one per thread, kept)."""
    import asyncio
    loop = _event_loop.get()
    running = asyncio._get_running_loop()
    if running is not None and (loop is None or running is loop):
        raise RuntimeError("Sync code on the event loop cannot wait for a coroutine; "
                           "await it, or run the sync code in a thread")
    if loop is None or not loop.is_running():
        own = getattr(_thread_state, "loop", None)
        if own is None or own.is_closed():
            own = _thread_state.loop = asyncio.new_event_loop()
        return own.run_until_complete(awaitable)
    import queue
    work: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
    token = _waiting_thread.set(work)
    try:  # the coroutine's task copies this context, so it finds `work`
        future = asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop)
    finally:
        _waiting_thread.reset(token)
    awaited = _awaited_futures.get()
    if awaited is not None:
        awaited.append(future)
    future.add_done_callback(lambda _: work.put(None))
    while (task := work.get()) is not None:
        task()
    return future.result()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


# Whether a view is async, by view: _is_async's lookups, done once per view.
_ASYNC_VIEWS: dict[Any, bool] = {}


def _remember_mode(view: Any) -> bool:
    is_async = _is_async(view)
    if len(_ASYNC_VIEWS) < 512:
        try:
            _ASYNC_VIEWS[view] = is_async
        except TypeError:  # an unhashable view is asked each time
            pass
    return is_async


def _call_in_worker(function: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    """A view's (or hook's) sync call in the ASGI thread pool; request.db, if it opened one,
    goes back before the thread is left."""
    try:
        return function(*args, **kwargs)
    finally:
        _give_back_connection(_current_request.get())


async def _to_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run sync code off the loop with the caller's context: on the thread waiting for
    this coroutine if there is one, else in the loop's pool. Cancelled (the client left),
    the coroutines the call waits for are cancelled and the call is waited for, since a
    thread cannot be stopped: only then are uploads, streams and connections closed under
    it. A response it returns late is closed."""
    import asyncio
    loop = asyncio.get_running_loop()
    context = copy_context()
    awaited: list[Any] = []
    context.run(_awaited_futures.set, awaited)
    context.run(_event_loop.set, loop)
    waiting = _waiting_thread.get()
    if waiting is None:
        running = (loop.run_in_executor(None, context.run, function, *args) if not kwargs else
                   loop.run_in_executor(None, lambda: context.run(function, *args, **kwargs)))
    else:
        running = loop.create_future()
        waiting.put(lambda: _settle(running, context.run, function, *args, **kwargs))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        for future in awaited:
            future.cancel()
        running.add_done_callback(_close_late_response)
        await asyncio.wait((running,))
        raise


def _settle(future: Any, run: Callable[..., Any], *call: Any, **kwargs: Any) -> None:
    """Run `call` on this thread and hand its outcome to `future`, on the future's loop."""
    loop = future.get_loop()
    try:
        result = run(*call, **kwargs)
    except BaseException as exc:  # handed over whole, as the pool's futures do
        loop.call_soon_threadsafe(_settle_future, future, None, exc)
    else:
        loop.call_soon_threadsafe(_settle_future, future, result, None)


def _settle_future(future: Any, result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        _close_late_response(future, result)
    elif exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _close_late_response(future: Any, result: Any = None) -> None:
    """Release what a response made after its client left holds (a file, a connection),
    without request_finished: that was sent for the request already."""
    if result is None and not future.cancelled() and future.exception() is None:
        result = future.result()
    if isinstance(result, HttpResponse) and not result._closed:
        result._closed = True
        for closer in result._resource_closers:
            try:
                closer()
            except Exception:
                _log.exception("Closing a response made after its client left failed")


def convert_exception_to_response(get_response: Callable[[Request], Any],
                                  app: App) -> Callable[[Request], Any]:
    """Wrap one layer of the onion so that whatever it raises or returns leaves it as a
    response: the layers outside see a 404 or a 500 response, never an exception, and a
    str, dict or (body, status) a layer returned becomes a response as a view's would.
    The wrapper is async when the layer is."""
    if _is_async(get_response):
        async def inner_async(request: Request) -> HttpResponse:
            try:
                response: HttpResponse = await get_response(request)
                if not isinstance(response, HttpResponse):
                    response = app.make_response(response, get_response, _layer_name)
            except Exception as exc:
                response = await app._drive_async(app._exception_journey(request, exc))
            return response
        inner_async.__wrapped__ = get_response  # type: ignore[attr-defined]
        return inner_async

    def inner(request: Request) -> HttpResponse:
        try:
            response = get_response(request)
            if not isinstance(response, HttpResponse):
                response = app.make_response(response, get_response, _layer_name)
        except Exception as exc:
            return app.response_for_exception(request, exc)
        return response

    inner.__wrapped__ = get_response  # type: ignore[attr-defined]
    return inner


def _layer_name(layer: Any) -> str:
    """How an error message names a middleware layer: its function, or Class.__call__."""
    if hasattr(layer, "__code__") or hasattr(layer, "__func__"):
        return f"the middleware {_name_of(layer)}"
    return f"the middleware {_name_of(type(layer))}.__call__"


def _import_string(dotted_path: str) -> Any:
    import importlib
    module_path, _, attribute = dotted_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_path), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"Cannot import middleware {dotted_path!r}: {exc}") from exc


class _LazyLogger:
    """A logger fetched on first use: importing logging costs milliseconds at start-up,
    and most requests log nothing."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        import logging
        return getattr(logging.getLogger(self.name), attribute)


_log = _LazyLogger("microhandler")


_LOG_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def _loggable(text: str) -> str:
    """`text` with control characters escaped: a log line cannot be forged or recoloured."""
    return text.translate(_LOG_ESCAPES)


# Beyond control characters: line and paragraph separators and bidirectional overrides,
# which can forge or reorder a log line once the path is decoded as UTF-8.
_PATH_LOG_ESCAPES = {**_LOG_ESCAPES, **{code: f"\\u{code:04x}" for code in (
    0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}}


def _logged_path(request: Request) -> str:
    """The request's path for a log line, decoded as UTF-8 (`/café`, not `/cafÃ©`): bytes
    that are not UTF-8 show as `\\xff`, control characters escaped."""
    raw: str = request.environ.get("SCRIPT_NAME", "").rstrip("/") + request.environ.get(
        "PATH_INFO", "")
    try:
        text = raw.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # not a PEP 3333 string: shown as it is, escaped
        text = raw
    return text.translate(_PATH_LOG_ESCAPES)


def _name_of(thing: Any) -> str:
    name = getattr(thing, "__qualname__", None) or type(thing).__qualname__
    module = getattr(thing, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


def _view_name(view: Any) -> str:
    return f"The view {_name_of(view)}"


def _hook_name(hook: Any) -> str:
    return f"The middleware hook {_name_of(hook)}"


def _handler_name(handler: Any) -> str:
    return f"The error handler {_name_of(handler)}"


class _Hooks:
    """One chain's middleware hooks, each with whether it must leave the event loop (a
    sync hook of a middleware that did not say it is async-capable)."""

    def __init__(self) -> None:
        self.view: list[tuple[Callable[..., Any], bool]] = []
        self.template: list[tuple[Callable[..., Any], bool]] = []
        self.exception: list[tuple[Callable[..., Any], bool]] = []
        self.none = True  # no hook at all: the journey can take its shortcut

    def add(self, instance: Any, offload: bool) -> None:
        # Walking the list from inner to outer: process_view runs outer to inner, so each
        # goes in front; template and exception hooks run inner to outer, like the response.
        if hasattr(instance, "process_view"):
            self.view.insert(0, (instance.process_view, offload))
        if hasattr(instance, "process_template_response"):
            self.template.append((instance.process_template_response, offload))
        if hasattr(instance, "process_exception"):
            self.exception.append((instance.process_exception, offload))
        self.none = not (self.view or self.template or self.exception)


def _middleware_mode(factory: Any, handler_is_async: bool) -> bool:
    """Django's rule: a middleware runs sync when it can and its inner handler is sync,
    else async when it can; one that can do neither is a configuration error."""
    can_sync = getattr(factory, "sync_capable", True)
    can_async = getattr(factory, "async_capable", False)
    if not can_sync and not can_async:
        raise ImproperlyConfigured(f"Middleware {_name_of(factory)} must have at least one "
                                   "of sync_capable/async_capable set to True")
    if not handler_is_async and can_sync:
        return False
    return bool(can_async)


def _adapt_method_mode(is_async: bool, method: Callable[..., Any],
                       method_is_async: bool) -> Callable[..., Any]:
    """`method` made callable in the other mode when its mode is not `is_async`: sync code
    goes to the thread pool, a coroutine runs to completion from the calling thread."""
    if is_async == method_is_async:
        return method
    if is_async:
        async def to_async(*args: Any) -> Any:
            return await _to_thread(method, *args)
        to_async.__wrapped__ = method  # type: ignore[attr-defined]
        return to_async

    def to_sync(*args: Any) -> Any:
        return _await_from_sync(method(*args))
    to_sync.__wrapped__ = method  # type: ignore[attr-defined]
    return to_sync


class App:
    """The WSGI application: routes, the middleware onion and error handling, configured by
    its arguments alone."""

    request_class: type[Request] = Request
    _connection_pool: _ConnectionPool | None = None  # made by request.db's first use
    _async_centre_only = False  # set by load_middleware(is_async=True)

    def __init__(self, routes: Iterable[Route | Iterable[Route]] = (),
                 middleware: Iterable[Callable[..., Any] | str] = (), *, debug: bool = False,
                 request_class: type[Request] | None = None,
                 allowed_hosts: Iterable[str] | None = None,
                 secret_key: str | bytes | None = None, max_body_size: int = 10 * 2**20,
                 max_form_fields: int = 1000, template_dirs: Iterable[str] = (),
                 renderer: Callable[[str, dict[str, Any], Request | None], str] | None = None,
                 append_slash: bool = False,
                 error_handlers: Mapping[int | type[BaseException], Callable[..., Any]]
                 | None = None,
                 template_filters: Mapping[str, Callable[..., Any]] | None = None,
                 database: Callable[[], Any] | None = None, atomic_requests: bool = False,
                 on_startup: Iterable[Callable[[], Any]] = (),
                 on_shutdown: Iterable[Callable[[], Any]] = ()) -> None:
        self._routes: list[Route] = list(_flatten_routes(routes))
        self.middleware: list[Any] = list(middleware)
        self.debug = debug
        if request_class is not None:
            self.request_class = request_class
        if isinstance(allowed_hosts, str):
            allowed_hosts = [allowed_hosts]
        self.allowed_hosts = (None if allowed_hosts is None
                              else [h.lower().rstrip(".") for h in allowed_hosts])
        self.secret_key = secret_key
        self.max_body_size = max_body_size
        self.max_form_fields = max_form_fields
        self.template_dirs = [os.fspath(d) for d in template_dirs]
        self.renderer = renderer
        self.append_slash = append_slash
        self.error_handlers: dict[int | type[BaseException], Callable[..., Any]] = dict(
            error_handlers or {})
        self.template_filters: dict[str, Callable[..., Any]] = dict(template_filters or {})
        self.database = database
        self.atomic_requests = atomic_requests
        self.on_startup: list[Callable[[], Any]] = list(on_startup)
        self.on_shutdown: list[Callable[[], Any]] = list(on_shutdown)
        self._middleware_chain: Callable[[Request], HttpResponse] | None = None
        # One chain per interface, built on first use: index False for WSGI, True for ASGI.
        self._chains: list[Callable[[Request], Any] | None] = [None, None]
        self._hooks: list[_Hooks] = [_Hooks(), _Hooks()]
        self._started = False
        self._resolver: Resolver | None = None
        self._templates: Any = None
        self._lock = _thread.RLock()

    # -- configuration
    def route(self, pattern: str, methods: Iterable[str] | None = None,
              name: str | None = None,
              kwargs: Mapping[str, Any] | None = None) -> Callable[[_F], _F]:
        """Decorator: `@app.route("/items/<int:id>", methods=["GET"], name="item")`."""
        def register(view: _F) -> _F:
            self.add_route(pattern, view, methods, name, kwargs)
            return view
        return register

    def add_route(self, pattern: str, view: Callable[..., Any],
                  methods: Iterable[str] | None = None, name: str | None = None,
                  kwargs: Mapping[str, Any] | None = None) -> Route:
        item = Route(pattern, view, methods, name, kwargs)
        with self._lock:
            self._routes.append(item)
            self._resolver = None  # recompiled on the next request
        return item

    def use(self, middleware: _Middleware) -> _Middleware:
        """Append a middleware (the innermost so far); only before the first request."""
        if self._chains[False] or self._chains[True]:
            raise ImproperlyConfigured(f"app.use({_name_of(middleware)}) came after the "
                                       "first request: add middleware before serving")
        self.middleware.append(middleware)
        return middleware

    def error_handler(self, status_or_class: int | type[BaseException]) -> Callable[[_F], _F]:
        """Decorator for `fn(request, exc) -> response`: the page for one error status, or
        for an exception class and its subclasses (`HttpError`, `Exception`...)."""
        def register(handler: _F) -> _F:
            self.error_handlers[status_or_class] = handler
            return handler
        return register

    def websocket(self, pattern: str, name: str | None = None) -> Callable[[_F], _F]:
        """Decorator for `async def handler(ws, **kwargs)` serving WebSockets on `pattern`."""
        def register(handler: _F) -> _F:
            with self._lock:
                self._routes.append(Route(pattern, handler, name=name, websocket=True))
                self._resolver = None
            return handler
        return register

    @property
    def asgi(self) -> ASGIHandler:
        """This App as an ASGI 3 application: `uvicorn module:app.asgi`."""
        handler = self.__dict__.get("_asgi")
        if handler is None:
            handler = self.__dict__["_asgi"] = ASGIHandler(self)
        return handler

    @property
    def resolver(self) -> Resolver:
        resolver = self._resolver
        if resolver is None:
            with self._lock:
                resolver = self._resolver = Resolver(self._routes)
        return resolver

    def reverse(self, name: str, /, *args: Any, **kwargs: Any) -> str:
        """The path of the route named `name`; inside a request, with its SCRIPT_NAME."""
        path = self.resolver.reverse(name, args, kwargs)
        request = _current_request.get()
        if request is not None and request.app is self and request.script_name:
            return quote(request.script_name, safe="/:@!$&'()*+,;=-._~%") + path
        return path

    def describe(self) -> str:
        """The middleware order and the compiled routes, for a reader or a log."""
        names = [m if isinstance(m, str) else _name_of(m) for m in self.middleware]
        onion = " -> ".join([*names, "view"]) if names else "view (no middleware)"
        built = [f"{interface}: " + ("the journey's shortcut (no middleware hook)"
                                     if self._hooks[is_async].none else "the full journey")
                 for is_async, interface in ((False, "WSGI"), (True, "ASGI"))
                 if self._chains[is_async] is not None]
        journey = f"\nbuilt: {'; '.join(built)}" if built else ""
        return f"middleware: {onion}{journey}\nroutes:\n{self.resolver.describe()}"

    # -- building the onion, once per mode
    def load_middleware(self, is_async: bool = False) -> Callable[[Request], Any]:
        """Build the middleware chain for one interface (once); the first middleware listed
        is outermost. As in Django, a layer is adapted to its neighbour's mode (sync or
        async) only where the two differ."""
        with self._lock:
            chain = self._chains[is_async]
            if chain is not None:
                return chain
            hooks = self._hooks[is_async] = _Hooks()
            handler: Callable[[Request], Any] = (
                self._get_response_async if is_async else self._get_response)
            # PERF: the centre catches what it raises itself, a call less than a wrapper's.
            handler_is_async = is_async
            for entry in reversed(self.middleware):
                factory = _import_string(entry) if isinstance(entry, str) else entry
                middleware_is_async = _middleware_mode(factory, handler_is_async)
                adapted = _adapt_method_mode(middleware_is_async, handler, handler_is_async)
                try:
                    instance = factory(adapted)
                except MiddlewareNotUsed as exc:
                    if self.debug:
                        _log.debug("MiddlewareNotUsed(%r): %s", _name_of(factory), exc or "")
                    continue
                if instance is None:
                    raise ImproperlyConfigured(f"Middleware factory {_name_of(factory)} "
                                               "returned None; it must return a handler")
                hooks.add(instance, offload=is_async and not getattr(
                    factory, "async_capable", False))
                handler = convert_exception_to_response(instance, self)
                handler_is_async = _is_async(handler)
            handler = _adapt_method_mode(is_async, handler, handler_is_async)
            self.resolver  # noqa: B018 (compile the routes before serving)
            self._chains[is_async] = handler
            if not is_async:
                self._middleware_chain = handler
            else:  # no layer around the centre: get_response_async takes its shortcut
                self._async_centre_only = not self.middleware
            return handler

    # -- the request's journey
    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The PEP 3333 entry point."""
        if self._middleware_chain is None:
            return self._first_call(environ, start_response)
        if request_started.receivers:
            request_started.send_robust(sender=type(self), environ=environ)
        request = self.request_class(environ, self)
        if _CLIENT_REQUEST in environ:
            environ[_CLIENT_REQUEST] = request  # the test Client's (see _CLIENT_REQUEST)
        token = _current_request.set(request)
        try:
            response = self.get_response(request)
        finally:
            _current_request.reset(token)
        return self._start_response(request, response, start_response)

    def _start_serving(self, is_async: bool) -> None:
        """Before the first request: run on_startup (once per App) and build the chain."""
        with self._lock:
            if not self._started:
                self._drive(_call_each(self.on_startup))
                self._started = True  # only once it succeeded: until then, each request tries
        self.load_middleware(is_async)

    def _first_call(self, environ: dict[str, Any],
                    start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The first request (or one after a failed start): start serving, then answer;
        an on_startup or a middleware factory that fails is a 500, not an exception."""
        try:
            self._start_serving(is_async=False)
        except Exception as exc:
            request = self.request_class(environ, self)
            token = _current_request.set(request)
            try:
                response = self._finish_response(request, self.response_for_exception(
                    request, exc))
            finally:
                _current_request.reset(token)
            return self._start_response(request, response, start_response)
        return self(environ, start_response)

    def get_response(self, request: Request) -> HttpResponse:
        """Run the request through the middleware onion; always returns a response."""
        chain = self._middleware_chain or self.load_middleware()
        bad_host = None if self.allowed_hosts is None else self._wrong_host(request)
        try:
            response = chain(request) if bad_host is None else self.response_for_exception(
                request, bad_host)
        except Exception as exc:  # a safety net: each layer and the centre catch their own
            response = self.response_for_exception(request, exc)
        if response.render is None and response.status_code < 400 and not request._files_to_close:
            return response  # PERF: nothing to render, release or log
        return self._finish_response(request, response)

    async def get_response_async(self, request: Request) -> HttpResponse:
        """The same journey under ASGI: the async chain, awaited."""
        chain = self._chains[True] or self.load_middleware(is_async=True)
        bad_host = None if self.allowed_hosts is None else self._wrong_host(request)
        try:
            if bad_host is not None:
                response: HttpResponse = await self._drive_async(
                    self._exception_journey(request, bad_host))
            elif self._async_centre_only:  # PERF: the centre's shortcut, one coroutine less
                callback, call = self._call_view_async(request)
                value = await call
                response = (_text_response(value) if type(value) is str
                            else await self._view_response_async(value, callback))
            else:
                response = await chain(request)
        except Exception as exc:  # from the shortcut above: the layers catch their own
            response = await self._drive_async(self._exception_journey(request, exc))
        if response.render is None and response.status_code < 400 and not request._files_to_close:
            return response  # PERF: nothing to render, release or log
        if response.render is not None and not response.is_rendered:
            response = await _to_thread(self._finish_response, request, response)
            return response
        return self._finish_response(request, response)

    def _wrong_host(self, request: Request) -> BadRequest | None:
        """With allowed_hosts, a request for another host is answered outside the onion
        (no middleware may answer it): the error to answer with, or None."""
        if self.allowed_hosts is None:
            return None
        try:
            request.host  # noqa: B018 (checks it against allowed_hosts)
        except BadRequest as exc:
            return exc
        return None

    def _finish_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        if response.render is not None and not response.is_rendered:
            # A TemplateResponse that a middleware returned goes out rendered too.
            try:
                response = response.render()
            except Exception as exc:
                response = self.response_for_exception(request, exc)
        if request._files_to_close:
            response.add_closer(request.close)
        if response.status_code >= 400 and not response._logged:
            self.log_response(request, response)
        return response

    def _get_response(self, request: Request) -> HttpResponse:
        """The centre of the onion under WSGI: the journey, run in this thread; what it
        raises leaves it as a response, as convert_exception_to_response would make it."""
        try:
            if self._hooks[False].none:
                # PERF: with no middleware hook, the journey is resolve, call, coerce: run
                # here without the generator and its driver (a third of a hello request).
                callback, args, kwargs = self.resolve_request(request)
                if self.atomic_requests:
                    callback = self.make_view_atomic(callback)
                # PERF: a plain call when there is nothing to unpack: f(r, *(), **{}) builds
                # a list, a tuple and a dict, and takes the slower call path.
                if args:
                    value = callback(request, *args, **kwargs)
                elif kwargs:
                    value = callback(request, **kwargs)
                else:
                    value = callback(request)
                if type(value) is str:  # PERF: what most views return, without make_response
                    return _text_response(value)
                if type(value) is dict or type(value) is list:  # PERF: as make_response would
                    return _json_response(value)
                if hasattr(value, "__await__"):
                    value = _await_from_sync(value)
                response = self.make_response(value, callback)
                if response.render is not None and not response.is_rendered:
                    response = response.render()
                return response
            result: HttpResponse = self._drive(self._journey(request, self._hooks[False]))
        except Exception as exc:
            result = self.response_for_exception(request, exc)
        return result

    async def _get_response_async(self, request: Request) -> HttpResponse:
        """The centre of the onion under ASGI: the same journey, awaited; what it raises
        leaves it as a response, as convert_exception_to_response would make it."""
        try:
            if self._hooks[True].none:  # PERF: the same shortcut, awaiting where it calls
                callback, call = self._call_view_async(request)
                value = await call
                if type(value) is str:
                    return _text_response(value)
                return await self._view_response_async(value, callback)
            result: HttpResponse = await self._drive_async(
                self._journey(request, self._hooks[True]))
        except Exception as exc:
            result = await self._drive_async(self._exception_journey(request, exc))
        return result

    def _call_view_async(self, request: Request) -> tuple[Callable[..., Any], Awaitable[Any]]:
        """The shortcut's first half: resolve and call the view, an async one on the loop,
        a sync one in the thread pool; the view and what to await for its value."""
        callback, args, kwargs = self.resolve_request(request)
        if self.atomic_requests:
            callback = self.make_view_atomic(callback)
            is_async = _is_async(callback)
        else:
            try:  # PERF: a view's mode, found once
                is_async = _ASYNC_VIEWS[callback]
            except (KeyError, TypeError):
                is_async = _remember_mode(callback)
        if is_async:  # PERF: no *()/**{} to unpack when there is nothing (see _get_response)
            return callback, (callback(request, *args, **kwargs) if args else
                              callback(request, **kwargs) if kwargs else callback(request))
        return callback, _to_thread(_call_in_worker, callback, (request, *args), kwargs)

    async def _view_response_async(self, value: Any, callback: Callable[..., Any]) -> HttpResponse:
        """The shortcut's second half: what the view returned (not a str), as a response."""
        if hasattr(value, "__await__"):
            value = await value
        response = self.make_response(value, callback)
        if response.render is not None and not response.is_rendered:
            response = await _to_thread(response.render)
        return response

    def _journey(self, request: Request, hooks: _Hooks) -> _Journey:
        """Resolve, view middleware, the view, template hooks, render: the decisions, written
        once for both interfaces. Each call into user code is yielded to the driver as
        (function, args, kwargs, offload) and its result (or exception) comes back."""
        callback, args, kwargs = self.resolve_request(request)
        response = None
        for process_view, offload in hooks.view:
            response = yield process_view, (request, callback, args, kwargs), {}, offload
            if response is not None:
                response = self.make_response(response, process_view, _hook_name)
                break
        if response is None:
            try:
                view = self.make_view_atomic(callback)
                response = yield view, (request, *args), kwargs, True
            except Exception as exc:
                response = yield from self._offer_exception(exc, request, hooks)
                if response is None:
                    raise
        if not isinstance(response, HttpResponse):
            response = self.make_response(response, callback)
        if response.render is not None and not response.is_rendered:
            for process_template_response, offload in hooks.template:
                response = yield process_template_response, (request, response), {}, offload
                if response is None:
                    raise ValueError(f"{_name_of(process_template_response)} returned None; "
                                     "process_template_response must return a response")
                response = self.make_response(response, process_template_response, _hook_name)
            try:
                response = yield from self._render_journey(request, response)
            except Exception as exc:
                response = yield from self._offer_exception(exc, request, hooks)
                if response is None:
                    raise
        return response

    def _render_journey(self, request: Request, response: HttpResponse) -> _Journey:
        if response.render is not None and not response.is_rendered:
            yield response.render, (), {}, True
        return response

    def _offer_exception(self, exc: Exception, request: Request,
                         hooks: _Hooks) -> _Journey:
        """Offer the exception to each process_exception hook, inner first; the first
        response wins."""
        for process_exception, offload in hooks.exception:
            response = yield process_exception, (request, exc), {}, offload
            if response is not None:
                return self.make_response(response, process_exception, _hook_name)
        return None

    def resolve_request(self, request: Request) -> tuple[Callable[..., Any], tuple[Any, ...],
                                                         dict[str, Any]]:
        """Find the view for the request and set `request.resolver_match`."""
        path = request.path_info
        method = request.method
        resolver = self._resolver or self.resolver
        static = resolver.first_static.get(path)
        if static is not None and method in static[1]:
            # PERF: a literal path whose route is known, at start-up, to be tried first.
            item = static[0]
            kwargs = item.kwargs.copy() if item.kwargs else {}
            request._route_found = (item, (), kwargs)
            return item.view, (), kwargs
        try:
            # PERF: the tuple the resolver made is kept as it is for resolver_match.
            item, args, kwargs = request._route_found = resolver.resolve(path, method)
        except MethodNotAllowed as exc:
            if exc.allowed == [_WEBSOCKET]:
                raise HttpError(426, "This path serves WebSocket connections only") from None
            if request.method != "OPTIONS":
                raise
            callback: Callable[..., Any] = _options_view(exc.allowed)
            request.resolver_match = ResolverMatch(callback, (), {}, None, path)
            return callback, (), {}
        except Http404:
            callback = self._append_slash_view(request)
            request.resolver_match = ResolverMatch(callback, (), {}, None, path)
            return callback, (), {}
        return item.view, args, kwargs

    def resolve_websocket(self, request: Request) -> tuple[Callable[..., Any],
                                                          tuple[Any, ...], dict[str, Any]]:
        """The WebSocket handler for the request's path; Http404 when there is none."""
        try:
            item, args, kwargs = self.resolver.resolve(request.path_info, _WEBSOCKET)
        except MethodNotAllowed:
            raise Http404() from None
        request.resolver_match = ResolverMatch(item.view, args, kwargs, item.name, item.pattern)
        return item.view, args, kwargs

    def _append_slash_view(self, request: Request) -> Callable[..., Any]:
        path = request.path_info
        # "//evil.example" + "/" would be a protocol-relative, off-site Location.
        if (not self.append_slash or path.endswith("/") or path.startswith("//")
                or not any(r.match(path + "/") for r in self.resolver.candidates(path + "/"))):
            raise Http404()
        location = quote(request.script_name + path + "/", safe=_PATH_SAFE)
        if request.query_string:
            location += "?" + request.query_string
        status = 301 if request.method in ("GET", "HEAD") else 308
        return lambda request: HttpResponseRedirect(location, status=status)

    def make_view_atomic(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """The view to call: with atomic_requests, wrapped to run in one transaction on
        request.db (Django's name); else `view` itself, at no cost."""
        if not self.atomic_requests:
            return view
        return _atomic_view(self, view)

    def process_exception_by_middleware(self, exc: Exception,
                                        request: Request) -> HttpResponse | None:
        """Django's name for offering an exception to the process_exception hooks."""
        response: HttpResponse | None = self._drive(
            self._offer_exception(exc, request, self._hooks[False]))
        return response

    # -- running a journey: the only place the two interfaces differ
    def _drive(self, journey: _Journey) -> Any:
        """Run a journey in this thread. A coroutine that user code returns (an async view
        under WSGI) runs to completion on this thread's event loop."""
        try:
            function, args, kwargs, _ = journey.send(None)
            while True:
                try:
                    result = function(*args, **kwargs)
                    if hasattr(result, "__await__"):
                        result = _await_from_sync(result)
                except Exception as exc:
                    function, args, kwargs, _ = journey.throw(exc)
                else:
                    function, args, kwargs, _ = journey.send(result)
        except StopIteration as stop:
            return stop.value

    async def _drive_async(self, journey: _Journey) -> Any:
        """Run a journey on the event loop: coroutines are awaited, and sync code that may
        block (a view, a sync-only middleware's hook, render) runs in the thread pool."""
        try:
            function, args, kwargs, offload = journey.send(None)
            while True:
                try:
                    if offload and not _is_async(function):
                        result = await _to_thread(_call_in_worker, function, args, kwargs)
                        if hasattr(result, "__await__"):  # a sync wrapper of an async view
                            result = await result
                    else:
                        result = function(*args, **kwargs)
                        if hasattr(result, "__await__"):
                            result = await result
                except Exception as exc:
                    function, args, kwargs, offload = journey.throw(exc)
                else:
                    function, args, kwargs, offload = journey.send(result)
        except StopIteration as stop:
            return stop.value

    def make_response(self, value: Any, source: Any = None,
                      describe: Callable[[Any], str] | None = None) -> HttpResponse:
        """Turn what a view (or a middleware, hook or error handler: `describe` names it)
        returned into a response: str/bytes, dict/list (JSON), (body, status) or
        (body, status, headers)."""
        if isinstance(value, HttpResponse):
            return value
        if type(value) is str:
            return _text_response(value)
        if isinstance(value, (str, bytes)):
            return HttpResponse(value)
        if isinstance(value, (dict, list)):
            return _json_response(value)
        if isinstance(value, tuple) and len(value) in (2, 3):
            body, status, *rest = value
            response = self.make_response(body, source, describe)
            response.status_code = int(status)
            headers = rest[0] if rest else ()
            for name, header in headers.items() if isinstance(headers, Mapping) else headers:
                response[name] = header
            return response
        what = (describe or _view_name)(source)
        if value is None:
            raise ValueError(f"{what} returned None; it must return a response, a str, "
                             "bytes, a dict or list, or (body, status)")
        raise TypeError(f"{what} returned a {type(value).__name__}, which is not a response, "
                        "str, bytes, dict, list or (body, status) tuple")

    # -- errors
    def response_for_exception(self, request: Request, exc: Exception) -> HttpResponse:
        """The error response for an exception that left a layer of the onion."""
        response: HttpResponse = self._drive(self._exception_journey(request, exc))
        return response

    def _exception_journey(self, request: Request, exc: Exception) -> _Journey:
        status = exc.status if isinstance(exc, HttpError) else 500
        reported = not isinstance(exc, HttpError)
        if reported:
            self._report_exception(request, exc)
        handler = self.error_handler_for(exc)
        response = None
        if handler is not None:
            try:
                response = yield handler, (request, exc), {}, True
                response = self.make_response(response, handler, _handler_name)
                response = yield from self._render_journey(request, response)
            except Exception as handler_exc:
                # As in Django: a failing error handler is a server error of its own.
                response = yield from self._handler_failed(request, handler, handler_exc)
                status, reported = 500, True
        if not isinstance(response, HttpResponse):
            response = self._default_error_response(request, exc, status)
        if isinstance(exc, MethodNotAllowed) and "allow" not in response._headers:
            response["Allow"] = ", ".join(m for m in exc.allowed if m != _WEBSOCKET)
        elif status == 426 and "upgrade" not in response._headers:
            response["Upgrade"] = "websocket"
        if reported:  # logged with its traceback: the access-log line would repeat it
            response._logged = True
        return response

    def _handler_failed(self, request: Request, handler: Any, exc: Exception) -> _Journey:
        """The 500 handler's page for an error handler that raised; the plain 500 page
        when that one raises too, or there is none."""
        self._report_exception(request, exc, f"The error handler {_name_of(handler)} failed")
        fallback = self.error_handlers.get(500)
        if fallback is not None and fallback is not handler:
            try:
                response = yield fallback, (request, exc), {}, True
                response = self.make_response(response, fallback, _handler_name)
                return (yield from self._render_journey(request, response))
            except Exception as fallback_exc:
                self._report_exception(request, fallback_exc, "The 500 error handler failed")
        return self._default_error_response(request, exc, 500)

    def error_handler_for(self, exc: BaseException) -> Callable[..., Any] | None:
        """The handler for `exc`, looked up as Flask does: an HttpError's status first, then
        classes along the exception's MRO; for any other exception, the MRO, then 500."""
        handlers = self.error_handlers
        if not handlers:
            return None
        if isinstance(exc, HttpError) and exc.status in handlers:
            return handlers[exc.status]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None if isinstance(exc, HttpError) else handlers.get(500)

    def _report_exception(self, request: Request, exc: BaseException,
                          message: str = "Internal Server Error") -> None:
        if got_request_exception.receivers:
            got_request_exception.send_robust(sender=type(self), request=request, exc=exc)
        _log.error("%s: %s", message, _logged_path(request), exc_info=exc)

    def _default_error_response(self, request: Request, exc: Exception,
                                status: int) -> HttpResponse:
        if status >= 500 and self.debug:
            return HttpResponse(_debug_page(request, exc), status)
        text = f"{status} {_reason_phrase(status)}"
        message = getattr(exc, "message", "")
        # Messages are the developer's or this file's own; a 500 shows nothing internal.
        if message and (status < 500 or self.debug):
            text += f"\n\n{message}"
        return HttpResponse(text + "\n", status, content_type="text/plain; charset=utf-8")

    def log_response(self, request: Request, response: HttpResponse) -> None:
        logger = _log
        log = logger.error if response.status_code >= 500 else logger.warning
        log("%s %s: %s %s", response.status_code, response.reason_phrase,
            _loggable(request.method), _logged_path(request))

    # -- templates
    def template_filter(self, name: str) -> Callable[[_F], _F]:
        """Decorator: `@app.template_filter("shout")` makes ``{{ x|shout }}`` call it, with the
        value (and the argument of ``shout:arg``, when its signature takes one)."""
        def register(func: _F) -> _F:
            self.template_filters[name] = func
            return func
        return register

    def render_template(self, template_name: str, context: Mapping[str, Any],
                        request: Request | None = None) -> str:
        """Render with `renderer` when given, else with this file's template engine."""
        if self.renderer is not None:
            return self.renderer(template_name, dict(context), request)
        if self._templates is None:  # it shares the dict: filters added later count too
            self._templates = TemplateLoader(self.template_dirs, strict=self.debug,
                                             filters=self.template_filters)
        if request is None:
            return str(self._templates.render(template_name, {"request": None, **context}))
        return str(self._templates.render(template_name, {**_template_context(request),
                                                          **context}))

    # -- handing the response to the server
    def _start_response(self, request: Request, response: HttpResponse,
                        start_response: Callable[..., Any]) -> Iterable[bytes]:
        status = response.status_code
        if (type(response) in _IN_MEMORY_RESPONSES and response._cookies is None
                and status not in _BODILESS_STATUSES and request.method != "HEAD"):
            # PERF: what views return most, with HttpResponse's own wsgi_headers and close:
            # the headers made here, the body a list (the cheapest a server can iterate)
            # when nothing waits for the close. 5% of a hello request.
            header_map = response._headers
            if "content-length" in header_map:
                headers = [*header_map.values()]
            else:
                headers = [*header_map.values(), ("Content-Length", f"{len(response._content)}")]
            status_line = response._reason_phrase is None and _STATUS_LINES.get(status)
            start_response(status_line or _status_line(status, response), headers)
            if response._resource_closers or request_finished.receivers:
                return response
            response._closed = True
            return [response._content]
        if status in _BODILESS_STATUSES or request.method == "HEAD":
            headers, has_body = _response_headers(response, request.method)
        else:
            headers, has_body = response.wsgi_headers(), True
        status_line = response._reason_phrase is None and _STATUS_LINES.get(status)
        start_response(status_line or _status_line(status, response), headers)
        if not has_body:
            return _ClosingIterable((), response.close)
        if response.streaming:
            wrapper = request.environ.get("wsgi.file_wrapper")
            if wrapper is not None and isinstance(response, FileResponse) and status == 200:
                wrapped: Iterable[bytes] = wrapper(_FileForWrapper(response), response.block_size)
                return wrapped
            return response
        if (not response._resource_closers and not request_finished.receivers
                and type(response).close is HttpResponse.close):
            # PERF: nothing to release and nobody listening for the close: a list is the
            # cheapest body a server can iterate.
            response._closed = True
            return [response._content]
        return response


_STATUS_LINES: dict[int, str] = {}
# Responses whose body is in memory and whose wsgi_headers and close are HttpResponse's.
_IN_MEMORY_RESPONSES = frozenset([HttpResponse, JsonResponse])
# RFC 9110: these responses have no body, so no Content-Type or Content-Length either.
_BODILESS_STATUSES = frozenset([*range(100, 200), 204, 304])


def _response_headers(response: HttpResponse,
                      method: str) -> tuple[list[tuple[str, str]], bool]:
    """The headers to send, and whether a body goes with them (not for HEAD, 1xx, 204, 304)."""
    headers = response.wsgi_headers()
    if response.status_code in _BODILESS_STATUSES:
        return [(k, v) for k, v in headers
                if k.lower() not in ("content-type", "content-length")], False
    return headers, method != "HEAD"


def _status_line(status: int, response: HttpResponse) -> str:
    if response._reason_phrase is not None:
        return f"{status} {response._reason_phrase}"
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"{status} {_reason_phrase(status)}"
    return line


class _ClosingIterable:
    """A body (often empty) whose close() closes the response: request_finished is sent."""

    def __init__(self, chunks: Iterable[bytes], close: Callable[[], None]) -> None:
        self._chunks = chunks
        self.close = close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


class _FileForWrapper:
    """The response's file as the server's file_wrapper sees it: reads (and fileno, for
    sendfile) go to the file; close() closes the whole response."""

    def __init__(self, response: FileResponse) -> None:
        self._file = response.file
        self.close = response.close

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._file.read(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _options_view(allowed: Iterable[str]) -> Callable[..., HttpResponse]:
    allow = ", ".join(sorted(set(allowed) | {"OPTIONS"}))

    def options(request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        response = HttpResponse(status=204)
        response["Allow"] = allow
        return response
    return options


def _render_without_app(template_name: str, context: Mapping[str, Any],
                        request: Request | None) -> str:
    raise TemplateError(f"TemplateResponse({template_name!r}) was rendered outside an App "
                        "request; return it from a view")


def _debug_page(request: Request, exc: BaseException) -> str:
    """The debug=True page for a 500: static, escaped text (no code runs from it)."""
    import traceback
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    environ = request.environ
    line = (f"{environ.get('REQUEST_METHOD', '')} {environ.get('SCRIPT_NAME', '')}"
            f"{environ.get('PATH_INFO', '')}"
            + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else ""))
    headers = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
    esc = _escape_html
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>"
            f"{esc(type(exc).__name__)} at {esc(line)}</title></head><body>"
            f"<h1>{esc(type(exc).__name__)}: {esc(str(exc))}</h1>"
            f"<h2>Request</h2><pre>{esc(line)}</pre>"
            f"<h2>Headers</h2><pre>{esc(headers)}</pre>"
            f"<h2>Traceback</h2><pre>{esc(trace)}</pre></body></html>")


# ---------------------------------------------------------------- async and ASGI
class WebSocketDisconnect(Exception):
    """The other side closed the WebSocket (or sent what the handler cannot read)."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}")
        self.code = code
        self.reason = reason


class WebSocket:
    """The `ws` a WebSocket handler gets: accept, receive and send text, bytes or JSON,
    close, and `async for message in ws` (a str per text frame, bytes per binary one)."""

    def __init__(self, request: Request, receive: _Receive, send: _Send) -> None:
        self.request = request
        self.state = "connecting"  # then "connected", then "closed"
        self._receive = receive
        self._send = send

    async def accept(self, subprotocol: str | None = None) -> None:
        if self.state == "connecting":
            await self._receive()  # the server's websocket.connect
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol})
        self.state = "connected"

    async def receive(self) -> str | bytes:
        """The next message; WebSocketDisconnect when the client has gone."""
        if self.state != "connected":
            raise RuntimeError(f"WebSocket is {self.state}: receive() needs accept() first")
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.state = "closed"
            raise WebSocketDisconnect(message.get("code", 1005), message.get("reason") or "")
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def receive_text(self) -> str:
        message = await self._receive_kind(str)
        assert isinstance(message, str)
        return message

    async def receive_bytes(self) -> bytes:
        message = await self._receive_kind(bytes)
        assert isinstance(message, bytes)
        return message

    async def receive_json(self) -> Any:
        import json
        message = await self.receive()
        try:
            return json.loads(message)
        except (ValueError, RecursionError):  # nested past Python's limit: bad data too
            await self.close(1007)  # RFC 6455: data not consistent with the message type
            raise WebSocketDisconnect(1007, "invalid JSON") from None

    async def _receive_kind(self, kind: type) -> str | bytes:
        message = await self.receive()
        if not isinstance(message, kind):
            await self.close(1003)  # RFC 6455: a type of data it cannot accept
            raise WebSocketDisconnect(1003, f"expected a {kind.__name__} message")
        return message

    async def send_text(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any) -> None:
        await self.send_text(_compact_json_encoder().encode(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.state == "closed":
            return
        if self.state == "connecting":
            await self._receive()  # the server's websocket.connect comes first
        self.state = "closed"
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None



class ASGIRequest(Request):
    """The Request for an ASGI scope (Django's name), when the App's request_class is
    Request. PERF: the environ is built from the scope on first use of `environ` or `META`;
    until then the method, path, query, cookies and a body received whole are read from the
    scope and the received bytes, so a request that needs no more never builds it (a fifth
    of an ASGI hello request). Once built, the environ is what every part is read from, as
    under WSGI. A subclass, so that WSGI's Request pays nothing for it (a property on
    Request itself would slow every `self.environ` there); it keeps Request's name, so that
    to a view, a middleware or a repr() the request is the App's Request under both."""

    _input: tuple[bytes | IO[bytes], int] | None = None  # the body received, and its size
    _built = False  # whether the environ was built

    def __init__(self, scope: dict[str, Any], app: App | None = None) -> None:
        self.scope = self._scope = scope
        self.app = app
        self.method = scope.get("method", "GET").upper()
        self._paths = _scope_paths(scope)
        path = self._paths[1] or "/"
        if path.isascii():  # else path_info decodes it from the environ
            self.path_info = path

    # (Writable as Request's attributes are: a cached value can be replaced.)
    @_lazy
    def environ(self) -> dict[str, Any]:  # type: ignore[override]
        environ = _environ_from_scope(self._scope, self._paths)
        if self._input is not None:
            _put_input(environ, *self._input)
        self._built = True
        return environ

    @_lazy
    def META(self) -> dict[str, Any]:  # type: ignore[override]
        return self.environ

    def _set_input(self, body: bytes | IO[bytes], size: int) -> None:
        self._input = (body, size)
        if self._built:
            _put_input(self.environ, body, size)

    @property
    def query_string(self) -> str:
        if self._built:
            return super().query_string
        query: bytes | None = self._scope.get("query_string")
        return query.decode("latin-1") if query else ""

    @_lazy
    def GET(self) -> QueryDict:
        return QueryDict(self.query_string, encoding=self._encoding or "utf-8")

    @_lazy
    def COOKIES(self) -> dict[str, str]:
        if self._built:
            return super().COOKIES
        header = _scope_header(self._scope, b"cookie", b"; ")
        # The environ's latin-1 text re-read as UTF-8 (Request.COOKIES) is this.
        return _parse_cookie(header.decode("utf-8", "replace") if header else "")

    @_lazy
    def content_length(self) -> int | None:
        if self._built or self._input is None:
            return super().content_length
        return self._input[1]

    def _raw_content_type(self) -> str:
        if self._built:
            return super()._raw_content_type()
        header = _scope_header(self._scope, b"content-type", b",")
        return header.decode("latin-1") if header else ""

    def _read_body_at_once(self) -> bytes | None:
        received = self._input
        if received is not None and isinstance(received[0], bytes) and not self._built:
            return received[0]  # PERF: the bytes as received, without a stream over them
        return super()._read_body_at_once()


ASGIRequest.__name__ = ASGIRequest.__qualname__ = "Request"


class ASGIHandler:
    """The App as an ASGI 3 application (Django's ASGIHandler): `http`, `websocket` and
    `lifespan` scopes, served by the same routes, middleware, errors, signals and limits.
    ASGI's vocabulary (scope, receive, send) stays in this section."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._startup_lock: tuple[Any, Any] | None = None  # (loop, asyncio.Lock)

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        """Serve one scope; http here (Django's handle(), inline: PERF, a coroutine less):
        receive the body, run the journey while listening for a disconnect, send the
        response. request_finished is sent once whatever happens."""
        if scope["type"] != "http":
            return await self.handle_other(scope, receive, send)
        app = self.app
        if app._started and app._chains[True] is not None:  # PERF: served before
            failure = None
        else:
            failure = await self._start_serving_or_failure()
        request = self._request_of(scope)
        token = _current_request.set(request)
        response: HttpResponse | None = None
        try:
            try:
                if failure is not None:
                    raise failure
                self._refuse_declared_body(request)
                message = await receive()
                # PERF: the whole body in one message is kept here, without read_body's frame
                received = (self._keep_whole_body(request, message)
                            or await self.read_body(receive, request, message))
            except Exception as exc:
                received = True
                response = await app._drive_async(app._exception_journey(request, exc))
                response = app._finish_response(request, response)
            if received and response is None:
                journey = app.get_response_async(request)
                try:  # PERF: a journey that never waits is answered before a disconnect matters
                    waiting_on = journey.send(None)
                except StopIteration as done:
                    response = done.value
                else:
                    response = await self.run_get_response(request, receive, journey, waiting_on)
            if response is not None:
                start, body = self.response_messages(request, response)
                await send(start)
                await (self.send_stream(response, send, receive) if body is None else send(body))
        finally:
            _current_request.reset(token)
            if response is not None:
                response.close()
            else:  # the client left: nothing is sent, but uploads close and the signal goes
                request.close()
                if request_finished.receivers:
                    request_finished.send_robust(sender=type(app))

    async def handle_other(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        """A websocket or lifespan scope."""
        kind = scope["type"]
        if kind == "websocket":
            await self.handle_websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.handle_lifespan(receive, send)
        else:
            raise ValueError(f"microhandler cannot serve the ASGI scope type {kind!r}")

    async def handle_http(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        """An http scope (served by __call__)."""
        await self(scope, receive, send)

    async def _start_serving_or_failure(self) -> Exception | None:
        try:
            await self._start_serving()
        except Exception as exc:  # on_startup failed: a 500 until it succeeds
            return exc
        return None

    def _request_of(self, scope: dict[str, Any]) -> Request:
        """The Request for an http scope, after request_started."""
        app = self.app
        request = self._new_request(scope)
        if request_started.receivers:
            request_started.send_robust(sender=type(app), environ=request.environ)
        if _CLIENT_REQUEST in scope:
            scope[_CLIENT_REQUEST] = request  # the test Client's (see _CLIENT_REQUEST)
        return request

    def _new_request(self, scope: dict[str, Any]) -> Request:
        """The App's request_class for a scope: for Request, an ASGIRequest; a class of the
        App's own is made from the scope's environ, as under WSGI."""
        request_class = self.app.request_class
        if request_class is Request:
            return ASGIRequest(scope, self.app)
        return request_class(_environ_from_scope(scope), self.app)

    def _refuse_declared_body(self, request: Request) -> None:
        """413 before receiving anything when Content-Length says the body is too large."""
        declared = _scope_header(request.scope or {}, b"content-length", b",")
        if declared is None or not declared.isdigit():  # bytes: ASCII digits only
            return
        # Past 18 digits it is over any limit, and int() of thousands of them would raise.
        digits = declared.lstrip(b"0")
        if len(digits) > 18 or int(digits or b"0") > self.app.max_body_size:
            raise RequestDataTooBig(f"Request body is larger than {self.app.max_body_size} bytes")

    def _keep_whole_body(self, request: Request, message: dict[str, Any]) -> bool:
        """When the first message holds the whole body (the usual case), keep it as the
        request's input and say True; read_body does the rest."""
        if message["type"] != "http.request" or message.get("more_body", False):
            return False
        chunk = message.get("body", b"")
        limit = self.app.max_body_size
        if len(chunk) > limit:
            raise RequestDataTooBig(f"Request body is larger than {limit} bytes")
        if len(chunk) > _UPLOAD_MEMORY_SIZE:  # a file, freed when the response closes
            body = io.BytesIO(chunk)
            request._files_to_close = [*request._files_to_close, body]
            request._set_input(body, len(chunk))
        else:
            request._set_input(chunk, len(chunk))
        return True

    async def read_body(self, receive: _Receive, request: Request,
                        message: dict[str, Any] | None = None) -> bool:
        """Receive the body (`message` is its first message, if received already), refusing
        it (413) as soon as it is over max_body_size; False when the client disconnected
        first. One message is kept as it is; more are spooled to a file (to disk past 1 MiB)."""
        if message is None:
            self._refuse_declared_body(request)
            message = await receive()
            if self._keep_whole_body(request, message):
                return True
        limit = self.app.max_body_size
        if message["type"] == "http.disconnect":
            return False
        chunk = message.get("body", b"")
        body, size = _spooled_file(), len(chunk)
        if size > limit:
            raise RequestDataTooBig(f"Request body is larger than {limit} bytes")
        body.write(chunk)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestDataTooBig(f"Request body is larger than {limit} bytes")
            body.write(chunk)
        body.seek(0)
        request._set_input(body, size)
        if size > _UPLOAD_MEMORY_SIZE:  # on disk: closed with the response, as uploads are
            request._files_to_close = [*request._files_to_close, body]
        return True

    async def run_get_response(self, request: Request, receive: _Receive,
                               journey: Any = None, waiting_on: Any = None
                               ) -> HttpResponse | None:
        """The response, or None when the client disconnected first: then the view is
        cancelled (Django's listen_for_disconnect). `journey` is get_response_async's
        coroutine when its first step was taken already, and `waiting_on` what it yielded."""
        import asyncio
        if journey is None:
            journey = self.app.get_response_async(request)
            try:  # PERF: a journey that never waits is answered before a disconnect matters
                waiting_on = journey.send(None)
            except StopIteration as done:
                response: HttpResponse = done.value
                return response
        watch = _DisconnectWatch(receive, _WATCH_DELAY)
        try:
            response = await _run_started(journey, waiting_on)
        except asyncio.CancelledError:
            if not watch.gone:
                raise  # the server cancelled us, not the client
        finally:
            await watch.stop()
        return None if watch.gone else response

    async def send_response(self, request: Request, response: HttpResponse,
                            send: _Send, receive: _Receive | None = None) -> None:
        start, body = self.response_messages(request, response)
        await send(start)
        await (send(body) if body is not None else self.send_stream(response, send, receive))

    def response_messages(self, request: Request, response: HttpResponse
                          ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The http.response.start message, and the body's (None for a stream to send)."""
        status = response.status_code
        fields = response._headers
        if (type(response) in _IN_MEMORY_RESPONSES and len(fields) == 1
                and response._cookies is None and status not in _BODILESS_STATUSES
                and request.method != "HEAD"):
            # PERF: a view's text or JSON (as _text_response and _json_response make them):
            # a content type encoded once, without the loop (a tenth of an ASGI hello).
            content_type = _ASGI_CONTENT_TYPES.get(fields.get("content-type"))  # type: ignore[arg-type]
            if content_type is not None:
                content = response._content
                return ({"type": "http.response.start", "status": status, "headers": [
                    content_type, (b"content-length", b"%d" % len(content))]},
                    {"type": "http.response.body", "body": content})
        if status in _BODILESS_STATUSES or request.method == "HEAD" or response.streaming:
            headers, has_body = _response_headers(response, request.method)
        else:  # PERF: the usual case, without the call
            headers, has_body = response.wsgi_headers(), True
        encoded = []
        for name, value in headers:  # PERF: a loop, not a comprehension's function call
            encoded.append((_ASGI_HEADER_NAMES.get(name) or _asgi_header_name(name),
                            _ASGI_TEXT_HTML if value is _TEXT_HTML else value.encode("latin-1")))
        start = {"type": "http.response.start", "status": status, "headers": encoded}
        if has_body and response.streaming:
            return start, None
        return start, {"type": "http.response.body", "body": response.content if has_body else b""}

    async def send_stream(self, response: HttpResponse, send: _Send,
                          receive: _Receive | None = None) -> None:
        """Each chunk is sent when it is produced (server-sent events); a sync iterator,
        a file's blocks among them, is advanced in the thread pool. With `receive`, a
        client that leaves stops the stream (servers drop what is sent after a disconnect,
        so an endless event stream would run forever): it is cancelled where it waits and
        not advanced again; the response's close() closes it."""
        import asyncio
        watch = _DisconnectWatch(receive) if receive is not None else None
        try:
            if response.is_async:
                async for chunk in response.streaming_content:  # type: ignore[attr-defined]
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
            else:
                chunks = iter(response.streaming_content)  # type: ignore[attr-defined]
                while (chunk := await _to_thread(next, chunks, None)) is not None:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
            if watch is None or not watch.gone:
                await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if watch is None or not watch.gone:
                raise  # the server cancelled us, not the client
        finally:
            if watch is not None:
                await watch.stop()

    # -- lifespan
    async def _start_serving(self) -> None:
        """Before the first request: on_startup (once per App, when no lifespan ran it;
        concurrent first requests wait for it), then the async chain."""
        import asyncio
        loop = asyncio.get_running_loop()
        _event_loop.set(loop)
        app = self.app
        if app._chains[True] is not None and app._started:
            return
        if self._startup_lock is None or self._startup_lock[0] is not loop:
            self._startup_lock = (loop, asyncio.Lock())
        async with self._startup_lock[1]:
            if not app._started:
                await app._drive_async(_call_each(app.on_startup))
                app._started = True  # only once it succeeded: until then, each request tries
            app.load_middleware(is_async=True)

    async def handle_lifespan(self, receive: _Receive, send: _Send) -> None:
        """The lifespan protocol: on_startup before serving, on_shutdown after."""
        while True:
            message = await receive()
            stage = message["type"].rpartition(".")[2]  # "startup" or "shutdown"
            try:
                if stage == "startup":  # each lifespan runs on_startup, as it runs on_shutdown
                    self.app._started = False
                    await self._start_serving()
                else:
                    await self.app._drive_async(_call_each(self.app.on_shutdown))
            except Exception as exc:
                _log.exception("The App's on_%s failed", stage)
                await send({"type": f"lifespan.{stage}.failed", "message": repr(exc)})
                return
            await send({"type": f"lifespan.{stage}.complete"})
            if stage == "shutdown":
                return

    # -- WebSocket
    async def handle_websocket(self, scope: dict[str, Any], receive: _Receive,
                               send: _Send) -> None:
        """Run the handler of the WebSocket route; a path with none (or a host that is not
        allowed) is closed before accept, which the client sees as HTTP 403."""
        app = self.app
        await self._start_serving()
        request = self._new_request(scope)
        socket = WebSocket(request, receive, send)
        try:
            if app._wrong_host(request) is not None:
                raise PermissionDenied()
            handler, args, kwargs = app.resolve_websocket(request)
        except HttpError:
            await socket.close()
            return
        token = _current_request.set(request)
        try:
            await handler(socket, *args, **kwargs)
        except WebSocketDisconnect:
            pass
        except Exception as exc:
            app._report_exception(request, exc, "WebSocket handler failed")
            await socket.close(1011)
        finally:
            _current_request.reset(token)
            request.close()
            if socket.state != "closed":
                await socket.close()


async def _run_started(coroutine: Any, waiting_on: Any) -> Any:
    """Run to its end, in this task, a coroutine whose first step was taken by hand and
    that yielded `waiting_on` (a future, or None for a bare yield), as a Task would."""
    import asyncio
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:  # as Task.__step does: the future's await has a yield of its own to make
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # it failed, or we were cancelled: the coroutine sees it
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration as done:
            return done.value


class _DisconnectWatch:
    """Cancels the task that made it when the client disconnects: Django's
    listen_for_disconnect with one extra task, not two. With `delay`, the listener starts
    only once the view has run that long (PERF: most views are done by then, and a task
    that waits on receive() costs a third of a sync view's request; a client that leaves
    is noticed that much later)."""

    def __init__(self, receive: _Receive, delay: float = 0.0) -> None:
        import asyncio
        self.gone = False
        self._task = asyncio.current_task()
        self._listener: Any = None
        self._start: Any = None
        if delay:
            self._start = asyncio.get_running_loop().call_later(delay, self._listen_now, receive)
        else:
            self._listen_now(receive)

    def _listen_now(self, receive: _Receive) -> None:
        import asyncio
        self._listener = asyncio.get_running_loop().create_task(self._listen(receive))

    async def _listen(self, receive: _Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop listening; a cancellation meant for the client's leaving is taken back, so
        it cannot reach the code after the view."""
        import asyncio
        if self._start is not None:
            self._start.cancel()
        if self._listener is not None:
            self._listener.cancel()
        if self.gone:
            try:  # the cancel() may still be pending if the view finished meanwhile
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass
            uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+
            while uncancel is not None and uncancel() > 0:
                pass


# How long a view runs before a disconnect is listened for (see _DisconnectWatch).
_WATCH_DELAY = 0.005


_ASGI_HEADER_NAMES: dict[str, bytes] = {}
# PERF: the default Content-Type's value, encoded once rather than per response.
_TEXT_HTML = _DEFAULT_CONTENT_TYPE[1]
_ASGI_TEXT_HTML = _TEXT_HTML.encode("latin-1")
# The content types of a view's text and JSON, as ASGI header pairs.
_ASGI_CONTENT_TYPES = {_DEFAULT_CONTENT_TYPE: (b"content-type", _ASGI_TEXT_HTML),
                       _JSON_CONTENT_TYPE: (b"content-type", b"application/json")}


def _asgi_header_name(name: str) -> bytes:
    """A response header's name as ASGI wants it: lowercase bytes (memoised: names repeat)."""
    encoded = _ASGI_HEADER_NAMES.get(name)
    if encoded is None:
        encoded = name.lower().encode("latin-1")
        if len(_ASGI_HEADER_NAMES) < 512:
            _ASGI_HEADER_NAMES[name] = encoded
    return encoded


def _call_each(functions: Iterable[Callable[[], Any]]) -> _Journey:
    """A journey that calls each function in turn (on_startup, on_shutdown)."""
    for function in functions:
        yield function, (), {}, False


def _scope_paths(scope: dict[str, Any]) -> tuple[str, str]:
    """SCRIPT_NAME and PATH_INFO for a scope, as PEP 3333 hands them over (latin-1). The
    path is taken from the bytes the server received when it gives them."""
    raw_path = scope.get("raw_path")
    if raw_path:
        # PERF: the bytes are looked for as ints (see _PERCENT).
        raw_path = raw_path.partition(b"?")[0] if _QUESTION_MARK in raw_path else raw_path
        path = (unquote_to_bytes(raw_path) if _PERCENT in raw_path else raw_path
                ).decode("latin-1")
    else:
        path = scope["path"].encode("utf-8").decode("latin-1")
    root_path = scope.get("root_path")
    if not root_path:
        return "", path
    script_name = root_path.rstrip("/").encode().decode("latin-1")
    if script_name and path.startswith(script_name):
        path = path[len(script_name):]
    return script_name, path


def _environ_from_scope(scope: dict[str, Any],
                        paths: tuple[str, str] | None = None) -> dict[str, Any]:
    """A PEP 3333 environ for an ASGI scope, so one Request class serves both interfaces;
    `paths` are the scope's _scope_paths, when worked out already."""
    script_name, path = paths or _scope_paths(scope)
    query = scope.get("query_string")
    server = scope.get("server")
    client = scope.get("client")
    scheme = scope.get("scheme")
    version = scope.get("http_version")
    # PERF: one dict display, its keys constant, rather than a copy then item by item.
    environ = {
        "REQUEST_METHOD": scope.get("method", "GET"), "SCRIPT_NAME": script_name,
        "PATH_INFO": path, "QUERY_STRING": query.decode("latin-1") if query else "",
        "SERVER_NAME": str(server[0]) if server else "localhost",
        "SERVER_PORT": str(server[1] or "") if server else "80",
        "REMOTE_ADDR": str(client[0]) if client else "",
        "SERVER_PROTOCOL": _SERVER_PROTOCOLS.get(version) or f"HTTP/{version}",
        "wsgi.url_scheme": _URL_SCHEMES.get(scheme) or scheme or "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
        "asgi.scope": scope,
    }
    if scope.get(_DONT_ENFORCE_CSRF):  # the test client's, as under WSGI
        environ[_DONT_ENFORCE_CSRF] = True
    keys = _ENVIRON_KEYS
    for raw_name, raw_value in scope.get("headers", ()):
        key = keys.get(raw_name) or _environ_key(raw_name)
        if not key:  # as the built-in server: X-User_Id cannot pose as X-User-Id
            continue
        value = raw_value.decode("latin-1")
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ


def _scope_header(scope: dict[str, Any], name: bytes, separator: bytes) -> bytes | None:
    """One request header's value read from the scope (`name` in lowercase), repeats joined
    with `separator` as the environ joins them; None when absent."""
    found = None
    size = len(name)
    for raw_name, raw_value in scope.get("headers", ()):
        # ASGI says lowercase; a server that sends otherwise is read as the environ reads it.
        if len(raw_name) == size and (raw_name == name or raw_name.lower() == name):
            found = raw_value if found is None else found + separator + raw_value
    return found


def _put_input(environ: dict[str, Any], body: bytes | IO[bytes], size: int) -> None:
    """Make the body the ASGI handler received the environ's input."""
    environ["wsgi.input"] = io.BytesIO(body) if isinstance(body, bytes) else body
    environ["CONTENT_LENGTH"] = str(size)


# What a scope's http_version and scheme say, as environ values (no version: HTTP/1.1).
_SERVER_PROTOCOLS: dict[Any, str] = {None: "HTTP/1.1", "": "HTTP/1.1", "1.1": "HTTP/1.1",
                                     "1.0": "HTTP/1.0", "2": "HTTP/2"}
_URL_SCHEMES: dict[Any, str] = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


# Header names as environ keys (b"user-agent" -> "HTTP_USER_AGENT"), memoised: the same
# few names come with every request.
_ENVIRON_KEYS: dict[bytes, str] = {}


def _environ_key(raw_name: bytes) -> str:
    key = ""
    if _UNDERSCORE not in raw_name:
        key = raw_name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
    if len(_ENVIRON_KEYS) < 512:
        _ENVIRON_KEYS[raw_name] = key
    return key


# ---------------------------------------------------------------- batteries
# Django's contrib middleware, one small class each. Every battery runs under WSGI and ASGI
# alike: _MiddlewareMixin calls its process_request / process_response around the inner
# layer, and awaits that layer when the chain is async.

def _no_inner_layer(request: Request) -> HttpResponse:
    raise ImproperlyConfigured("A configured middleware was called outside an App's chain")


class _ConfiguredMiddleware:
    """What `CorsMiddleware(allow_origins=[...])` returns: the class and its options, which
    the chain builder calls with `get_response`."""

    def __init__(self, cls: type[_MiddlewareMixin], options: dict[str, Any]) -> None:
        cls(_no_inner_layer, **options)  # a misspelt or bad option fails here, where written
        self.cls = cls
        self.options = options
        self.sync_capable = cls.sync_capable
        self.async_capable = cls.async_capable
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def __call__(self, get_response: Callable[..., Any]) -> Any:
        return self.cls(get_response, **self.options)

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self.options.items())
        return f"{self.cls.__name__}({options})"


class _MiddlewareMixin:
    """Django's MiddlewareMixin: a battery writes `process_request(request)` (a response
    to answer early, or None) and `process_response(request, response)` once; `__call__`
    runs them around the inner layer, awaiting it when the chain is async (ASGI).

    A battery is listed bare (`SessionMiddleware`) or called with its options only
    (`CorsMiddleware(allow_origins=[...])`), which gives a factory the chain calls with
    `get_response`. Type checkers read `__init__`, not `__new__`: so each `__init__` takes
    `get_response` as optional and its options by keyword, and both forms are checked."""

    sync_capable = True
    async_capable = True

    def __new__(cls, get_response: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        if get_response is None:  # SessionMiddleware(max_age=3600): a configured factory
            return _ConfiguredMiddleware(cls, options)
        return super().__new__(cls)

    def __init__(self, get_response: Callable[..., Any] | None = None, /) -> None:
        # Never None here: without it, __new__ returned a factory and __init__ is skipped.
        self.get_response: Callable[..., Any] = (_no_inner_layer if get_response is None
                                                 else get_response)
        self._async = _is_async(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Request) -> Any:
        if self._async:
            return self.__acall__(request)
        response = self.process_request(request)
        if response is None:
            response = self.get_response(request)
        return self.process_response(request, response)

    async def __acall__(self, request: Request) -> HttpResponse:
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)
        return self.process_response(request, response)

    def process_request(self, request: Request) -> HttpResponse | None:
        return None

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        return response


def _add_vary(response: HttpResponse, *names: str) -> None:
    """Add header names to `Vary` (Django's patch_vary_headers): caches must key on them."""
    current = response.get("Vary")
    if not current:
        response["Vary"] = ", ".join(names)
        return
    present = {item.strip(" \t").lower() for item in current.split(",")}
    missing = [name for name in names if name.lower() not in present]
    if missing and "*" not in present:
        response["Vary"] = ", ".join([current, *missing])


def _has_directive(header: str, directive: str) -> bool:
    """Whether a Cache-Control value holds `directive` (with or without an argument)."""
    return any(item.strip(" \t").partition("=")[0].lower() == directive
               for item in header.split(","))


# -- batteries: sessions and messages

# RFC 6265 6.1: a browser keeps at least 4096 bytes of one cookie's name and value, and no
# more is safe to count on.
_COOKIE_SIZE_LIMIT = 4096


class _Session(_StrMutableMapping):
    """`request.session`: a dict of JSON values kept in a signed cookie, read on first use.

    A change inside a stored list or dict is not seen: set `request.session.modified = True`.
    """

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        self._load = load
        self._data: dict[str, Any] | None = None
        self.modified = False
        self.accessed = False

    @property
    def _store(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._load()
        self.accessed = True
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._store[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def flush(self) -> None:
        """Empty the session; its cookie is deleted with the response."""
        self._data = {}
        self.accessed = self.modified = True

    def __repr__(self) -> str:
        return f"<session {self._store!r}>"


def _encode_session(data: dict[str, Any]) -> str:
    import base64
    import json
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request.session holds JSON values only (str, int, float, bool, "
                        f"None, list, dict): {exc}") from None
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _decode_session(value: str) -> dict[str, Any]:
    """The session a cookie holds; {} for anything that is not a base64 JSON object.
    JSON only, never pickle: a leaked secret_key must not become code execution."""
    import base64
    import binascii
    import json
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


class SessionMiddleware(_MiddlewareMixin):
    """`request.session`, saved in a cookie signed with the App's secret_key (HMAC-SHA256);
    the cookie is written only when the session changed, and expires after `max_age`
    seconds (None: when the browser closes)."""

    def __init__(self, get_response: Callable[..., Any] | None = None, /, *,
                 cookie_name: str = "session", max_age: int | None = 14 * 24 * 3600,
                 secure: bool = False, httponly: bool = True,
                 samesite: str | None = "Lax") -> None:
        super().__init__(get_response)
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.secure = secure
        self.httponly = httponly
        self.samesite = samesite

    def process_request(self, request: Request) -> None:
        request.session = _Session(lambda: self.load(request))

    def load(self, request: Request) -> dict[str, Any]:
        """The session in the request's cookie; {} when missing, tampered with or expired."""
        secret = _secret_key_of(request.app)  # missing: said at first use, not first save
        signed = request.COOKIES.get(self.cookie_name)
        if not signed:
            return {}
        value = _unsign_cookie(secret, self.cookie_name, signed, self.max_age)
        return {} if value is None else _decode_session(value)

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if not isinstance(session, _Session):
            return response
        if session.accessed:
            _add_vary(response, "Cookie")
        # As Django: a failed request (5xx) leaves the session as it was.
        if not session.modified or response.status_code >= 500:
            return response
        if not session:
            if self.cookie_name in request.COOKIES:
                response.delete_cookie(self.cookie_name, samesite=self.samesite)
            return response
        value = _sign_cookie(_secret_key_of(request.app), self.cookie_name,
                             _encode_session(dict(session)))
        size = len(self.cookie_name) + 1 + len(value)
        if size > _COOKIE_SIZE_LIMIT:
            raise ValueError(f"The session cookie {self.cookie_name!r} would be {size} bytes, "
                             f"over the {_COOKIE_SIZE_LIMIT} a browser keeps: store less in "
                             "request.session (an id, not the data)")
        response.set_cookie(self.cookie_name, value, max_age=self.max_age, secure=self.secure,
                            httponly=self.httponly, samesite=self.samesite)
        return response


_MESSAGES_KEY = "_messages"


class _Message:
    """A one-time message: `.text` and `.level` ("info", "success", "warning", "error"...)."""

    __slots__ = ("level", "text")

    def __init__(self, text: str, level: str = "info") -> None:
        self.text = text
        self.level = level

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _Message) and (self.text, self.level)
                == (other.text, other.level))

    def __hash__(self) -> int:
        return hash((self.text, self.level))

    def __repr__(self) -> str:
        return f"Message({self.text!r}, level={self.level!r})"


def add_message(request: Request, text: str, level: str = "info") -> None:
    """Keep a message in the session for the next page shown (after a redirect, say)."""
    session = getattr(request, "session", None)
    if session is None:
        raise ImproperlyConfigured("add_message() keeps messages in request.session: add "
                                   "SessionMiddleware to App(middleware=[...])")
    session[_MESSAGES_KEY] = [*session.get(_MESSAGES_KEY, ()), [str(level), str(text)]]


def get_messages(request: Request) -> list[_Message]:
    """The messages waiting for this request, removed from the session (shown once)."""
    session = getattr(request, "session", None)
    stored = session.pop(_MESSAGES_KEY, None) if session is not None else None
    if not isinstance(stored, list):
        return []
    return [_Message(str(item[1]), str(item[0])) for item in stored
            if isinstance(item, list) and len(item) == 2]


class _TemplateMessages:
    """`messages` in a template: taken from the session when the template loops over them,
    so a page that never shows them leaves them for the next; `{% if messages %}` peeks."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._taken: list[_Message] | None = None

    def __iter__(self) -> Iterator[_Message]:
        if self._taken is None:
            self._taken = get_messages(self._request)
        return iter(self._taken)

    def __len__(self) -> int:
        if self._taken is not None:
            return len(self._taken)
        session = getattr(self._request, "session", None)
        stored = session.get(_MESSAGES_KEY) if session is not None else None
        return len(stored) if isinstance(stored, list) else 0


class _TemplateCsrfToken:
    """`csrf_token` in a template: made (and its cookie set) only if the page prints it;
    empty when the App has no CsrfViewMiddleware, so a template outlives the middleware."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def __html__(self) -> str:
        if getattr(self._request, "_csrf_middleware", None) is None:
            return ""
        return csrf_token(self._request)

    __str__ = __html__


def _template_context(request: Request) -> dict[str, Any]:
    """What every template rendered for a request sees, each made only when used."""
    return {"request": request, "messages": _TemplateMessages(request),
            "csrf_token": _TemplateCsrfToken(request)}


# -- batteries: CSRF

_CSRF_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_CSRF_INDEX = {char: index for index, char in enumerate(_CSRF_CHARS)}
# What a client sends: the secret itself (32) or masked (64), as Django accepts both.
_CSRF_TOKEN = _lazy_regex(r"[A-Za-z0-9]{32}(?:[A-Za-z0-9]{32})?")
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
_CSRF_COOKIE_AGE = 52 * 7 * 24 * 3600  # Django's: a year, so an open form stays valid
# Set by the test Client unless Client(enforce_csrf_checks=True), as Django's does.
_DONT_ENFORCE_CSRF = "microhandler.dont_enforce_csrf_checks"


def _new_csrf_string() -> str:
    """32 random characters of _CSRF_CHARS from the OS's CSPRNG, without bias: a byte
    past 247 (= 4 * 62 - 1) is drawn again."""
    # PERF: one urandom call, not 32 secrets.choice() calls (a form page makes one mask).
    chars: list[str] = []
    while len(chars) < 32:
        chars += [_CSRF_CHARS[byte % 62] for byte in os.urandom(40) if byte < 248]
    return "".join(chars[:32])


def _mask_csrf_secret(secret: str) -> str:
    """The secret under a fresh one-time mask, so a page's token differs on every response
    and compression leaks nothing of the secret (BREACH)."""
    mask = _new_csrf_string()
    index = _CSRF_INDEX
    return mask + "".join(_CSRF_CHARS[(index[s] + index[m]) % 62]
                          for s, m in zip(secret, mask, strict=True))


def _unmask_csrf_token(token: str) -> str:
    if len(token) == 32:
        return token
    mask, cipher = token[:32], token[32:]
    index = _CSRF_INDEX
    return "".join(_CSRF_CHARS[(index[c] - index[m]) % 62]
                   for c, m in zip(cipher, mask, strict=True))


def _normal_origin(origin: str) -> str:
    """`scheme://host[:port]` lower-cased and without the scheme's default port."""
    origin = origin.lower().rstrip("/")
    for scheme, port in (("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme) and origin.endswith(port):
            return origin[:-len(port)]
    return origin


def _origin_matches(pattern: str, origin: str) -> bool:
    """`origin` against a trusted one: exact, or `https://*.example.com` for subdomains."""
    if "://*." not in pattern:
        return origin == pattern
    scheme, _, domain = pattern.partition("://*")
    host = origin[len(scheme) + 3:] if origin.startswith(scheme + "://") else ""
    return len(host) > len(domain) and host.endswith(domain) and "/" not in host


def csrf_exempt(view: _F) -> _F:
    """Mark a view that skips every CSRF check (an API authenticated by a bearer token,
    which a browser never sends on its own)."""
    try:
        view.csrf_exempt = True  # type: ignore[attr-defined]
        return view
    except AttributeError:  # a bound method takes no attributes: mark a wrapper instead
        import functools
        exempt = functools.wraps(view)(lambda *args, **kwargs: view(*args, **kwargs))
        exempt.csrf_exempt = True  # type: ignore[attr-defined]
        return markcoroutinefunction(exempt) if _is_async(view) else exempt  # type: ignore[return-value]


def csrf_token(request: Request) -> str:
    """The CSRF token for a form field `csrfmiddlewaretoken` or an `X-CSRFToken` header;
    the cookie it is checked against goes out with the response."""
    middleware = getattr(request, "_csrf_middleware", None)
    if middleware is None:
        raise ImproperlyConfigured("csrf_token() needs CsrfViewMiddleware in "
                                   "App(middleware=[...])")
    secret = getattr(request, "_csrf_secret", None)
    if secret is None:
        secret = middleware.cookie_secret(request) or _new_csrf_string()
        request._csrf_secret = secret  # type: ignore[attr-defined]
    return _mask_csrf_secret(secret)


class CsrfViewMiddleware(_MiddlewareMixin):
    """Django's CSRF protection: an unsafe request must come from this site (Origin, or
    Referer over HTTPS) and carry the token of its CSRF cookie; else a 403 saying why."""

    def __init__(self, get_response: Callable[..., Any] | None = None, /, *,
                 trusted_origins: Iterable[str] = (), cookie_name: str = "csrftoken",
                 header_name: str = "X-CSRFToken") -> None:
        super().__init__(get_response)
        origins = [trusted_origins] if isinstance(trusted_origins, str) else trusted_origins
        self.trusted_origins = [_normal_origin(origin) for origin in origins]
        for origin in self.trusted_origins:
            if "://" not in origin:
                raise ImproperlyConfigured(f"trusted_origins takes origins with a scheme, "
                                           f"like 'https://{origin}', not {origin!r}")
        self.cookie_name = cookie_name
        self.header_key = "HTTP_" + header_name.upper().replace("-", "_")

    def process_request(self, request: Request) -> None:
        request._csrf_middleware = self  # type: ignore[attr-defined]

    def process_view(self, request: Request, view: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> None:
        if (request.method in _SAFE_METHODS or getattr(view, "csrf_exempt", False)
                or request.environ.get(_DONT_ENFORCE_CSRF)):
            return
        origin = request.environ.get("HTTP_ORIGIN")
        if origin is not None:
            if not self.trusted(request, origin):
                raise PermissionDenied("CSRF check failed: the Origin header names another "
                                       "site, neither this one nor a trusted origin.")
        elif request.is_secure:
            self.check_referer(request)
        self.check_token(request)

    def trusted(self, request: Request, origin: str) -> bool:
        """Whether `origin` is the request's own or one of `trusted_origins`."""
        origin = _normal_origin(origin)
        if origin == _normal_origin(f"{request.scheme}://{request.host}"):
            return True
        return any(_origin_matches(pattern, origin) for pattern in self.trusted_origins)

    def check_referer(self, request: Request) -> None:
        """Over HTTPS without Origin (older browsers), the Referer must name this site."""
        referer = request.environ.get("HTTP_REFERER")
        if not referer:
            raise PermissionDenied("CSRF check failed: a secure request came with neither "
                                   "an Origin nor a Referer header.")
        try:
            parts = urlsplit(referer)
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "https" or not parts.netloc:
            raise PermissionDenied("CSRF check failed: the Referer is not an https URL.")
        if not self.trusted(request, f"https://{parts.netloc}"):
            raise PermissionDenied("CSRF check failed: the Referer names another site, "
                                   "neither this one nor a trusted origin.")

    def cookie_secret(self, request: Request) -> str | None:
        value = request.COOKIES.get(self.cookie_name, "")
        return _unmask_csrf_token(value) if _CSRF_TOKEN.fullmatch(value) else None

    def check_token(self, request: Request) -> None:
        """The token in the form field or the header must be the cookie's, unmasked."""
        import hmac
        secret = self.cookie_secret(request)
        if secret is None:
            raise PermissionDenied("CSRF check failed: the CSRF cookie is not set (load the "
                                   "form's page first, with cookies enabled).")
        token = request.POST.get("csrfmiddlewaretoken", "") if request.method == "POST" else ""
        token = token or request.environ.get(self.header_key, "")
        if not token:
            raise PermissionDenied("CSRF check failed: the CSRF token is missing (form "
                                   "field csrfmiddlewaretoken or the CSRF header).")
        if not _CSRF_TOKEN.fullmatch(token) or not hmac.compare_digest(
                _unmask_csrf_token(token).encode(), secret.encode()):
            raise PermissionDenied("CSRF check failed: the CSRF token is incorrect.")

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        secret = getattr(request, "_csrf_secret", None)
        if secret is not None:  # csrf_token() was called: (re)set the cookie it pairs with
            response.set_cookie(self.cookie_name, secret, max_age=_CSRF_COOKIE_AGE,
                                secure=request.is_secure, samesite="Lax")
            _add_vary(response, "Cookie")
        return response


# -- batteries: CORS

class CorsMiddleware(_MiddlewareMixin):
    """Cross-origin requests from the origins allowed (django-cors-headers): preflights are
    answered before routing; other responses, errors included, carry the CORS headers."""

    def __init__(self, get_response: Callable[..., Any] | None = None, /, *,
                 allow_origins: str | Iterable[str] | Callable[[str], bool] = (),
                 allow_methods: Iterable[str] = ("GET", "HEAD", "POST", "PUT", "PATCH",
                                                 "DELETE", "OPTIONS"),
                 allow_headers: str | Iterable[str] = (), expose_headers: Iterable[str] = (),
                 allow_credentials: bool = False, max_age: int = 600) -> None:
        super().__init__(get_response)
        self.origin_check = allow_origins if callable(allow_origins) else None
        origins = [] if callable(allow_origins) else (
            [allow_origins] if isinstance(allow_origins, str) else list(allow_origins))
        self.any_origin = origins == ["*"]
        if "*" in origins and not self.any_origin:
            raise ImproperlyConfigured("allow_origins: '*' stands alone, not among origins")
        self.origins = frozenset(_normal_origin(origin) for origin in origins)
        headers = [allow_headers] if isinstance(allow_headers, str) else list(allow_headers)
        self.any_header = headers == ["*"]  # echo what the preflight asks for
        self.allow_headers = ", ".join(headers)
        self.allow_methods = ", ".join(method.upper() for method in allow_methods)
        self.expose_headers = ", ".join(expose_headers)
        self.allow_credentials = allow_credentials
        self.max_age = max_age
        # The answer depends on Origin unless every origin gets the same "*".
        self.varies = not (self.any_origin and not allow_credentials)

    def allowed(self, origin: str) -> bool:
        if self.any_origin:
            return True
        if self.origin_check is not None:
            return bool(self.origin_check(origin))
        return _normal_origin(origin) in self.origins

    def process_request(self, request: Request) -> HttpResponse | None:
        environ = request.environ
        origin = environ.get("HTTP_ORIGIN")
        if (origin is None or request.method != "OPTIONS"
                or "HTTP_ACCESS_CONTROL_REQUEST_METHOD" not in environ
                or not self.allowed(origin)):
            return None
        # A preflight: answered here, whatever the route's methods (process_response adds
        # the origin).
        response = HttpResponse(status=204)
        response["Access-Control-Allow-Methods"] = self.allow_methods
        headers = (environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "") if self.any_header
                   else self.allow_headers)
        if headers:
            response["Access-Control-Allow-Headers"] = headers
        if self.max_age:
            response["Access-Control-Max-Age"] = str(self.max_age)
        return response

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        if self.varies:
            _add_vary(response, "Origin")
        origin = request.environ.get("HTTP_ORIGIN")
        if origin is None or not self.allowed(origin):
            return response
        response["Access-Control-Allow-Origin"] = origin if self.varies else "*"
        if self.allow_credentials:
            response["Access-Control-Allow-Credentials"] = "true"
        if self.expose_headers:
            response["Access-Control-Expose-Headers"] = self.expose_headers
        return response


# -- batteries: GZip

_COMPRESSIBLE_TYPES = frozenset(("application/json", "application/javascript",
                                 "application/ecmascript", "application/xml",
                                 "application/wasm", "image/svg+xml"))
# RFC 9110 12.5.3: codings [ OWS ";" OWS "q=" qvalue ], qvalue 0 to 1 with 3 decimals.
_ACCEPT_CODING = _lazy_regex(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*"
                            r"(?:;[ \t]*[qQ]=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*)?")


def _compressible(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip(" \t").lower()
    return (media.startswith("text/") or media in _COMPRESSIBLE_TYPES
            or media.endswith(("+json", "+xml")))


def _accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip: named with q > 0, or `*` with q > 0 and gzip
    not named. A malformed element is ignored."""
    gzip_q = star_q = None
    for element in header.split(","):
        match = _ACCEPT_CODING.fullmatch(element)
        if match is None:
            continue
        coding = match.group(1).lower()
        q = float(match.group(2)) if match.group(2) else 1.0
        if coding in ("gzip", "x-gzip"):
            gzip_q = max(q, gzip_q or 0.0)
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def _gzip_chunks(chunks: Iterable[bytes], level: int) -> Iterator[bytes]:
    import zlib
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if chunk:
            # Flushed per chunk: each one reaches the client when produced (server-sent events).
            yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


async def _gzip_chunks_async(chunks: Any, level: int) -> Any:
    import zlib
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    async for chunk in chunks:
        if chunk:
            yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


def _as_plain_stream(response: StreamingHttpResponse) -> StreamingHttpResponse:
    """The same response, no longer a FileResponse: a server sends a FileResponse's file
    itself (wsgi.file_wrapper, sendfile), which would skip a changed streaming_content."""
    if not isinstance(response, FileResponse):
        return response
    plain = StreamingHttpResponse.__new__(StreamingHttpResponse)
    plain.__dict__.update(response.__dict__)
    return plain


class GZipMiddleware(_MiddlewareMixin):
    """Compress text-like bodies, streaming ones too, for clients that accept gzip."""

    def __init__(self, get_response: Callable[..., Any] | None = None, /, *,
                 min_size: int = 200, compresslevel: int = 6) -> None:
        super().__init__(get_response)
        self.min_size = min_size
        self.compresslevel = compresslevel

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        if (response.status_code == 206 or "Content-Encoding" in response
                or not _compressible(response.get("Content-Type") or "")
                or _has_directive(response.get("Cache-Control") or "", "no-transform")
                or (not response.streaming and len(response.content) < self.min_size)):
            return response
        _add_vary(response, "Accept-Encoding")
        if not _accepts_gzip(request.environ.get("HTTP_ACCEPT_ENCODING", "")):
            return response
        if response.streaming:
            response = self.compress_stream(response)  # type: ignore[arg-type]
        else:
            import zlib
            compressor = zlib.compressobj(self.compresslevel, zlib.DEFLATED,
                                          16 + zlib.MAX_WBITS)
            compressed = compressor.compress(response.content) + compressor.flush()
            if len(compressed) >= len(response.content):
                return response
            response.content = compressed
            response["Content-Length"] = str(len(compressed))
        etag = response.get("ETag")
        if etag and etag.startswith('"'):  # the bytes differ now: only weakly the same
            response["ETag"] = "W/" + etag
        response["Content-Encoding"] = "gzip"
        return response

    def compress_stream(self, response: StreamingHttpResponse) -> StreamingHttpResponse:
        response = _as_plain_stream(response)
        del response["Content-Length"]
        if getattr(response, "is_async", False):
            response.streaming_content = _gzip_chunks_async(response.streaming_content,
                                                            self.compresslevel)
        else:
            response.streaming_content = _gzip_chunks(response.streaming_content,
                                                      self.compresslevel)
        return response


# -- batteries: conditional GET

_ETAG = _lazy_regex(r'(W/)?("[^"]*")')
# What a 304 keeps of the 200 it replaces (RFC 9110 15.4.5).
_NOT_MODIFIED_HEADERS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires",
                         "Last-Modified", "Vary")


def _etag_matches(header: str, etag: str | None, *, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match list names `etag` (RFC 9110 8.8.3.2: weak
    comparison ignores W/, strong needs both tags strong)."""
    if header.strip(" \t") == "*":
        return True
    if etag is None or (not weak and etag.startswith("W/")):
        return False
    target = etag.removeprefix("W/")
    return any(opaque == target and (weak or not is_weak)
               for is_weak, opaque in _ETAG.findall(header))


def _conditional_status(environ: Mapping[str, Any], etag: str | None,
                        last_modified: str | None) -> int:
    """200, 304 or 412 for a GET or HEAD, in RFC 9110 13.2.2's order: If-Match, else
    If-Unmodified-Since; then If-None-Match, else If-Modified-Since."""
    def modified_after(header: str) -> bool | None:
        since = _parse_http_date(environ.get(header) or "")
        modified = _parse_http_date(last_modified) if last_modified else None
        return None if since is None or modified is None else modified > since

    if "HTTP_IF_MATCH" in environ:
        if not _etag_matches(environ["HTTP_IF_MATCH"], etag, weak=False):
            return 412
    elif environ.get("HTTP_IF_UNMODIFIED_SINCE") and modified_after(
            "HTTP_IF_UNMODIFIED_SINCE"):
        return 412
    if "HTTP_IF_NONE_MATCH" in environ:
        return 304 if _etag_matches(environ["HTTP_IF_NONE_MATCH"], etag, weak=True) else 200
    if environ.get("HTTP_IF_MODIFIED_SINCE") and modified_after(
            "HTTP_IF_MODIFIED_SINCE") is False:
        return 304
    return 200


class ConditionalGetMiddleware(_MiddlewareMixin):
    """An ETag for every GET/HEAD 200 that lacks one, and 304 when the client's copy is
    current (412 when an If-Match precondition fails)."""

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        if request.method not in ("GET", "HEAD") or response.status_code != 200:
            return response
        if (not response.streaming and "ETag" not in response
                and not _has_directive(response.get("Cache-Control") or "", "no-store")):
            import hashlib
            response["ETag"] = f'"{hashlib.blake2b(response.content, digest_size=16).hexdigest()}"'
        etag, last_modified = response.get("ETag"), response.get("Last-Modified")
        if etag is None and last_modified is None:
            return response
        status = _conditional_status(request.environ, etag, last_modified)
        if status == 200:
            return response
        answer = HttpResponse(status=status)
        if status == 304:
            for name in _NOT_MODIFIED_HEADERS:
                value = response.get(name)
                if value is not None:
                    answer[name] = value
        answer._cookies = response._cookies
        answer._resource_closers = response._resource_closers  # the unsent body is released
        return answer


# -- batteries: security headers

class SecurityMiddleware(_MiddlewareMixin):
    """Django's SecurityMiddleware: nosniff, Referrer-Policy, Cross-Origin-Opener-Policy,
    HSTS (over HTTPS only) and, with `ssl_redirect`, a redirect from http to https."""

    def __init__(self, get_response: Callable[..., Any] | None = None, /, *,
                 hsts_seconds: int = 0, hsts_include_subdomains: bool = False,
                 ssl_redirect: bool = False,
                 content_type_nosniff: bool = True,
                 referrer_policy: str | Iterable[str] | None = "same-origin",
                 cross_origin_opener_policy: str | None = "same-origin") -> None:
        super().__init__(get_response)
        self.hsts = (f"max-age={int(hsts_seconds)}"
                     + ("; includeSubDomains" if hsts_include_subdomains else "")
                     if hsts_seconds else None)
        self.ssl_redirect = ssl_redirect
        self.headers = [("X-Content-Type-Options", "nosniff" if content_type_nosniff else None),
                        ("Referrer-Policy", referrer_policy if referrer_policy is None
                         or isinstance(referrer_policy, str) else ", ".join(referrer_policy)),
                        ("Cross-Origin-Opener-Policy", cross_origin_opener_policy)]

    def process_request(self, request: Request) -> HttpResponse | None:
        if not self.ssl_redirect or request.is_secure:
            return None
        host = request.host.removesuffix(":80")
        location = "https://" + host + quote(request.path, safe=_PATH_SAFE)
        if request.query_string:
            location += "?" + request.query_string
        # 308 keeps a POST a POST; a GET may be cached for good (301).
        return HttpResponseRedirect(location, 301 if request.method in ("GET", "HEAD") else 308)

    def process_response(self, request: Request, response: HttpResponse) -> HttpResponse:
        if self.hsts and request.is_secure:
            response.setdefault("Strict-Transport-Security", self.hsts)
        for name, value in self.headers:
            if value:
                response.setdefault(name, value)
        return response


# ---------------------------------------------------------------- test client

class _ClientHeaders:
    """A response's headers as the client got them, as Werkzeug's test client has them:
    case-insensitive; `h[name]` is the first value, `h.getlist(name)` every value (one per
    Set-Cookie), `h.items()` every (name, value) pair in the order sent."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = list(pairs)
        self._values: dict[str, list[str]] = {}
        self._names: dict[str, str] = {}  # lowercased -> as first sent
        for name, value in self._pairs:
            self._values.setdefault(name.lower(), []).append(value)
            self._names.setdefault(name.lower(), name)

    def __getitem__(self, name: str) -> str:
        values = self._values.get(name.lower()) if isinstance(name, str) else None
        if not values:
            raise KeyError(name)
        return values[0]

    def get(self, name: str, default: Any = None) -> Any:
        values = self._values.get(name.lower())
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._names)

    def keys(self) -> list[str]:
        """Each name once, as first sent (so `dict(headers)` holds the first values)."""
        return list(self._names.values())

    def values(self) -> list[str]:
        return [value for _, value in self._pairs]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"<headers {self._pairs!r}>"


# The environ (scope) key under which the App hands the test Client the Request it made, when
# the Client put it there (as None). Not for servers: a request -> environ -> request cycle
# would leave every request and its parsed parts to the garbage collector (PERF).
_CLIENT_REQUEST = "microhandler.request"


class ClientResponse:
    """What a Client call returns: status, headers, body, cookies and the Request used.
    `exc_info` holds the server error the app answered with a 500, when the Client was
    made with raise_server_exceptions=False (as Django's test client)."""

    def __init__(self, status: str, headers: list[tuple[str, str]], content: bytes,
                 request: Request | None, environ: dict[str, Any]) -> None:
        code, _, reason = status.partition(" ")
        self.status_code = int(code)
        self.reason_phrase = reason
        self.header_list = headers
        self.headers = _ClientHeaders(headers)
        self.content = content
        self.request = request
        self.environ = environ
        self.redirect_chain: list[tuple[str, int]] = []
        self.cookies: dict[str, str] = {}
        self.exc_info: tuple[type[BaseException], BaseException, Any] | None = None

    @property
    def text(self) -> str:
        charset = _charset_of(self.headers.get("Content-Type", ""))
        try:
            return self.content.decode(charset, "replace")
        except LookupError:  # a charset Python does not know, or not a text encoding
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json
        return json.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status_code} {self.headers.get('Content-Type', '')!r}>"


def _encode_multipart(data: Mapping[str, Any], files: Mapping[str, Any]) -> tuple[bytes, str]:
    import uuid
    boundary = f"----microhandler{uuid.uuid4().hex}"
    out = io.BytesIO()

    def part(disposition: str, content_type: str | None, payload: bytes) -> None:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n".encode())
        if content_type:
            out.write(f"Content-Type: {content_type}\r\n".encode())
        out.write(b"\r\n" + payload + b"\r\n")

    def quoted(text: str) -> str:
        # As browsers do (HTML Standard), and a backslash doubled so that one ending a name
        # cannot escape the closing quote.
        return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace(
            "\n", "%0A")

    for name, values in data.items():
        for value in values if isinstance(values, (list, tuple)) else [values]:
            payload = value if isinstance(value, bytes) else str(value).encode()
            part(f'name="{quoted(name)}"', None, payload)
    for name, spec in files.items():
        for filename, payload, content_type in _file_specs(name, spec):
            part(f'name="{quoted(name)}"; filename="{quoted(filename)}"',
                 content_type or "application/octet-stream", payload)
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _file_specs(name: str, spec: Any) -> list[tuple[str, bytes, str | None]]:
    """`files=` values as `requests` takes them: (filename, bytes[, type]), a file, or a
    list of those."""
    if isinstance(spec, list):
        return [item for one in spec for item in _file_specs(name, one)]
    if isinstance(spec, tuple):
        filename, payload = spec[0], spec[1]
        content_type = spec[2] if len(spec) > 2 else None
    else:
        filename, payload, content_type = os.path.basename(getattr(spec, "name", name)), spec, None
    if hasattr(payload, "read"):
        payload = payload.read()
    if isinstance(payload, str):
        payload = payload.encode()
    return [(filename, payload, content_type)]


class Client:
    """Calls an app in-process through the full WSGI interface (under wsgiref.validate),
    or through `app.asgi` with `asgi=True`, keeping cookies between calls, as a browser
    would."""

    def __init__(self, app: Callable[..., Any], *, raise_server_exceptions: bool = True,
                 asgi: bool = False, host: str = "testserver", script_name: str = "",
                 enforce_csrf_checks: bool = False) -> None:
        self.app = app
        self.asgi = asgi
        self.raise_server_exceptions = raise_server_exceptions
        # As Django's test client: views are tested without CSRF tokens unless asked.
        self.enforce_csrf_checks = enforce_csrf_checks
        self.host = host
        self.script_name = script_name
        self.cookies: dict[str, str] = {}

    def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("DELETE", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("HEAD", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> ClientResponse:
        return self.request("OPTIONS", path, **kwargs)

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | str | bytes | None = None, json: Any = None,
                files: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | None = None,
                content_type: str | None = None, follow: bool = False) -> ClientResponse:
        """One request (and, with follow=True, the redirects after it, at most 20)."""
        payload, content_type = self._encode_body(data, json, files, body, content_type)
        response = self._send(method, path, query, payload, content_type, headers)
        chain: list[tuple[str, int]] = []
        while follow and response.status_code in (301, 302, 303, 307, 308) and len(chain) < 20:
            location = response.headers.get("Location")
            try:
                target = urlsplit(location or "")
            except ValueError:  # "http://[x": a browser would not follow it either
                break
            if not location:
                break
            chain.append((location, response.status_code))
            if response.status_code in (301, 302, 303) and method != "HEAD":
                # Browsers turn a redirected POST into a GET; 307/308 keep method and body.
                method, payload, content_type = "GET", b"", None
            next_path = target.path or path
            response = self._send(method, next_path + (f"?{target.query}" if target.query
                                                       else ""), None, payload, content_type,
                                  headers)
        response.redirect_chain = chain
        return response

    def _encode_body(self, data: Any, json_data: Any, files: Any, body: bytes | None,
                     content_type: str | None) -> tuple[bytes, str | None]:
        if body is not None:
            return (body.encode() if isinstance(body, str) else body), content_type
        if json_data is not None:
            import json
            return json.dumps(json_data).encode(), content_type or "application/json"
        if files:
            return _encode_multipart(data or {}, files)
        if isinstance(data, (str, bytes)):
            return (data.encode() if isinstance(data, str) else data), content_type
        if data is not None:
            from urllib.parse import urlencode
            return (urlencode(data, doseq=True).encode(),
                    content_type or "application/x-www-form-urlencoded")
        return b"", content_type

    def _environ(self, method: str, path: str, query: Mapping[str, Any] | None, body: bytes,
                 content_type: str | None, headers: Mapping[str, str] | None) -> dict[str, Any]:
        from urllib.parse import urlencode
        # A path "//x/y" is a path, not the host x (urlsplit alone would read a host).
        target = urlsplit("http://testserver" + path if path.startswith("/") else path)
        query_string = target.query
        if query:
            query_string += ("&" if query_string else "") + urlencode(query, doseq=True)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method.upper(), "SCRIPT_NAME": self.script_name,
            # As servers do: percent-decoded bytes, handed over as latin-1 text (PEP 3333).
            "PATH_INFO": unquote_to_bytes(target.path or "/").decode("latin-1"),
            "QUERY_STRING": query_string, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": self.host, "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
            "wsgi.run_once": False, _CLIENT_REQUEST: None,
        }
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            environ["CONTENT_LENGTH"] = str(len(body))
        if content_type:
            environ["CONTENT_TYPE"] = content_type
        if not self.enforce_csrf_checks:
            environ[_DONT_ENFORCE_CSRF] = True
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for name, value in (headers or {}).items():
            value = value.encode("utf-8").decode("latin-1")  # as a server hands bytes over
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        return environ

    def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: bytes,
              content_type: str | None, headers: Mapping[str, str] | None) -> ClientResponse:
        environ = self._environ(method, path, query, body, content_type, headers)
        scope = _scope_from_environ(environ) if self.asgi else None
        captured: list[BaseException] = []

        def capture(sender: Any, request: Any = None, exc: Any = None, **kwargs: Any) -> None:
            # The signal is global: keep only this call's exception, not another thread's.
            if request is not None and (request.scope is scope if scope is not None
                                        else request.environ is environ):
                captured.append(exc)

        got_request_exception.connect(capture)
        try:
            if scope is None:
                status, header_list, content = self._call_wsgi(environ)
                request = environ[_CLIENT_REQUEST]
            else:
                status, header_list, content = self._call_asgi(scope, body)
                request = scope[_CLIENT_REQUEST]
        except Exception as exc:
            if self.raise_server_exceptions:
                raise
            # The app raised into the server: a server would answer 500, and so do we.
            captured.append(exc)
            status, content = "500 Internal Server Error", b"500 Internal Server Error\n"
            header_list = [("Content-Type", "text/plain; charset=utf-8")]
            request = None
        finally:
            got_request_exception.disconnect(capture)
        if captured and self.raise_server_exceptions:
            raise captured[0]
        response = ClientResponse(status, header_list, content, request, environ)
        if captured:
            response.exc_info = (type(captured[0]), captured[0], captured[0].__traceback__)
        self._store_cookies(response)
        return response

    def _call_wsgi(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status, headers and body, through wsgiref.validate; the body iterated and closed."""
        from wsgiref.validate import validator
        started: list[Any] = []

        def start_response(status: str, response_headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], Any]:
            started[:] = [status, response_headers]
            return lambda data: None

        result: Any = validator(self.app)(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            result.close()
        if not started:
            raise RuntimeError(f"{_name_of(self.app)} returned without calling start_response")
        return started[0], started[1], content

    def _call_asgi(self, scope: dict[str, Any],
                   body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        """One request through the App's ASGI interface, on an event loop of its own."""
        import asyncio
        sent: list[dict[str, Any]] = []
        incoming = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop()
            await asyncio.Event().wait()  # the client never leaves: wait to be cancelled
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(_asgi_of(self.app)(scope, receive, send))
        if not sent or sent[0].get("type") != "http.response.start":
            raise RuntimeError(f"{_name_of(self.app)} sent no http.response.start")
        start = sent[0]
        status = start["status"]
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in start["headers"]]
        content = b"".join(message.get("body", b"") for message in sent[1:])
        return f"{status} {_reason_phrase(status)}", headers, content

    def websocket(self, path: str, subprotocols: Sequence[str] | None = None,
                  headers: Mapping[str, str] | None = None) -> WebSocketSession:
        """A WebSocket session with the App (always through `app.asgi`), as a context
        manager: `with client.websocket("/ws") as ws: ws.send_text("hi")`."""
        environ = self._environ("GET", path, None, b"", None, headers)
        scope = _scope_from_environ(environ, "websocket")
        scope["subprotocols"] = list(subprotocols or ())
        return WebSocketSession(_asgi_of(self.app), scope)

    def _store_cookies(self, response: ClientResponse) -> None:
        from http.cookies import CookieError, SimpleCookie
        for name, value in response.header_list:
            if name.lower() != "set-cookie":
                continue
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value)
            except CookieError:
                continue
            for key, morsel in jar.items():
                if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.cookies.pop(key, None)
                    response.cookies[key] = ""
                else:
                    # Kept as sent (quoted if the server quoted it), as a browser returns it.
                    self.cookies[key] = morsel.coded_value
                    response.cookies[key] = _unquote_cookie(morsel.coded_value)


def _asgi_of(app: Any) -> Callable[..., Any]:
    asgi: Callable[..., Any] = getattr(app, "asgi", app)
    return asgi


def _scope_from_environ(environ: dict[str, Any], kind: str = "http") -> dict[str, Any]:
    """The ASGI scope a server would build for the request the test client describes."""
    headers = [(key[5:].replace("_", "-").lower().encode("latin-1"), value.encode("latin-1"))
               for key, value in environ.items() if key.startswith("HTTP_")]
    headers += [(key.replace("_", "-").lower().encode("latin-1"), environ[key].encode("latin-1"))
                for key in ("CONTENT_TYPE", "CONTENT_LENGTH") if key in environ]
    full_path = environ["SCRIPT_NAME"] + environ["PATH_INFO"]
    scheme = environ["wsgi.url_scheme"]
    return {
        _DONT_ENFORCE_CSRF: environ.get(_DONT_ENFORCE_CSRF, False), _CLIENT_REQUEST: None,
        "type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": scheme if kind == "http" else {"http": "ws", "https": "wss"}[scheme],
        "path": full_path.encode("latin-1").decode("utf-8", "replace"),
        "raw_path": quote(full_path.encode("latin-1"), safe="/").encode("ascii"),
        "root_path": environ["SCRIPT_NAME"].encode("latin-1").decode("utf-8", "replace"),
        "headers": headers,
        "query_string": environ["QUERY_STRING"].encode("latin-1"),
        "client": (environ["REMOTE_ADDR"], 50000),
        "server": (environ["SERVER_NAME"], int(environ["SERVER_PORT"])),
    }


class WebSocketSession:
    """The test client's side of a WebSocket: the App's handler runs on an event loop in
    a thread of its own, and messages cross over in queues (every wait bounded)."""

    timeout = 10.0

    def __init__(self, asgi: Callable[..., Any], scope: dict[str, Any]) -> None:
        import queue
        self._asgi = asgi
        self._scope = scope
        self._to_app: queue.Queue[dict[str, Any]] = queue.Queue()
        self._from_app: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.accepted_subprotocol: str | None = None
        self.closed = False

    def __enter__(self) -> WebSocketSession:
        import threading
        self._thread = threading.Thread(target=self._run_app, daemon=True)
        self._thread.start()
        self._to_app.put({"type": "websocket.connect"})
        message = self._next_from_app()
        if message["type"] == "websocket.close":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1000), "refused before accept (403)")
        self.accepted_subprotocol = message.get("subprotocol")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _run_app(self) -> None:
        import asyncio

        async def receive() -> dict[str, Any]:
            return await asyncio.get_running_loop().run_in_executor(None, self._to_app.get)

        async def send(message: dict[str, Any]) -> None:
            self._from_app.put(message)

        try:
            asyncio.run(self._asgi(self._scope, receive, send))
        finally:
            self._from_app.put(None)  # the handler has returned

    def _next_from_app(self) -> dict[str, Any]:
        import queue
        try:
            message = self._from_app.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError("the WebSocket handler sent nothing in time") from None
        if message is None:
            self.closed = True
            raise WebSocketDisconnect(1006, "the handler returned without closing")
        return message

    def receive(self) -> str | bytes:
        message = self._next_from_app()
        if message["type"] == "websocket.close":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason") or "")
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    def receive_text(self) -> str:
        message = self.receive()
        assert isinstance(message, str), f"expected a text message, got {message!r}"
        return message

    def receive_bytes(self) -> bytes:
        message = self.receive()
        assert isinstance(message, bytes), f"expected a binary message, got {message!r}"
        return message

    def receive_json(self) -> Any:
        import json
        return json.loads(self.receive())

    def send_text(self, data: str) -> None:
        self._to_app.put({"type": "websocket.receive", "text": data})

    def send_bytes(self, data: bytes) -> None:
        self._to_app.put({"type": "websocket.receive", "bytes": data})

    def send_json(self, data: Any) -> None:
        import json
        self.send_text(json.dumps(data))

    def close(self, code: int = 1000) -> None:
        """Disconnect, and wait (bounded) for the handler to finish."""
        self._to_app.put({"type": "websocket.disconnect", "code": code})
        self._thread.join(self.timeout)
        self.closed = True


# ---------------------------------------------------------------- servers and command line

_server_log = _LazyLogger("microhandler.server")
_reload_log = _LazyLogger("microhandler.reloader")

_SERVER_CHOICES = ("wsgiref", "waitress", "uvicorn")
_WAITRESS_MISSING = (
    'waitress is not installed: pip install waitress (or pip install "microhandler[waitress]")'
)
_UVICORN_MISSING = (
    'uvicorn is not installed: pip install "uvicorn[standard]" (or pip install '
    '"microhandler[uvicorn]")'
)
_STOP_TIMEOUT = 10.0   # how long shutdown() waits for the serving loop to return
_GRACE_SECONDS = 5.0   # how long shutdown() lets requests in progress finish
_SIGNAL_POLL = 0.2     # how often serve() looks at its stop flag


class _ServerNotInstalled(ImportError):
    """The chosen server's package is missing; the message says how to install it."""


# -- servers: the built-in server's bounds

_MAX_REQUEST_LINE = 8 * 1024     # 414 past it
_MAX_HEADER_BYTES = 64 * 1024    # the header section; 431 past it
_MAX_HEADER_FIELDS = 100         # 431 past it
_HEADER_TIMEOUT = 10.0           # the whole header section must arrive within this (408)
_KEEPALIVE_TIMEOUT = 5.0         # an idle keep-alive connection is closed after this
_MAX_CONNECTIONS = 100           # beyond: new connections wait in the listen backlog
_IO_TIMEOUT = 30.0               # one read of a body, or one write of a response, waits this long
_LISTEN_BACKLOG = 128
_ACCEPT_POLL = 0.2               # how often the accepting loop looks at its stop flag
_BODY_BLOCK = 64 * 1024          # the most read from a socket, or handed to wsgi.input, at once
_MAX_BLANK_LINES = 8             # CRLFs ignored before a request line (RFC 9112 2.2)


class _Bounds:
    """The built-in server's limits (keyword options of make_server() and serve())."""

    def __init__(self, *, max_request_line: int = _MAX_REQUEST_LINE,
                 max_header_bytes: int = _MAX_HEADER_BYTES,
                 max_header_fields: int = _MAX_HEADER_FIELDS,
                 header_timeout: float = _HEADER_TIMEOUT,
                 keepalive_timeout: float = _KEEPALIVE_TIMEOUT,
                 max_connections: int = _MAX_CONNECTIONS) -> None:
        for name, value in (("max_request_line", max_request_line),
                            ("max_header_bytes", max_header_bytes),
                            ("max_header_fields", max_header_fields),
                            ("header_timeout", header_timeout),
                            ("keepalive_timeout", keepalive_timeout),
                            ("max_connections", max_connections)):
            if not value > 0:
                raise ValueError(f"{name} must be more than 0, not {value!r}")
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_header_fields = max_header_fields
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections


# -- servers: reading a request head from bytes, by RFC 9112's grammar

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# request-line = method SP request-target SP HTTP-version, single spaces only: no other
# byte (\x85, \xa0, \x0b, \x1c...) separates the parts, so a proxy and this server cannot
# read two different targets out of one line. A target's raw non-ASCII bytes are kept
# (PEP 3333 hands them on as latin-1); controls, spaces and DEL are not URI characters.
_REQUEST_LINE = _lazy_regex(rb"(" + _TOKEN + rb") ([\x21-\x7e\x80-\xff]+) (HTTP/[0-9]\.[0-9])")
_SERVED_VERSIONS = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
# field-line = field-name ":" OWS field-value OWS. A bare CR or LF, NUL or another control
# character, a space before the colon or a folded line (obs-fold) is read differently by
# different parsers, which is how a request is smuggled past a proxy: all are refused.
_FIELD_LINE = _lazy_regex(rb"(" + _TOKEN + rb"):([^\x00-\x08\x0a-\x1f\x7f]*)")
# absolute-form: served by its path; its authority replaces Host (RFC 9112 3.2.2).
_ABSOLUTE_TARGET = _lazy_regex(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#@]+)([/?][^#]*)?(?:#.*)?")
_HOST_VALUE = _lazy_regex(rb"[0-9A-Za-z\-._~%!$&'()*+,;=:\[\]]*")
_HOST_TEXT = _lazy_regex(_HOST_VALUE.pattern.decode())


class _Refusal(Exception):
    """A request the server answers itself, with `status`, then closes the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _SocketReader:
    """Buffered reads from a client socket: head lines, then body blocks, never past what
    the current request needs (the rest stays for the next request)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self.deadline: float | None = None   # set while a head is read: the header timeout

    def has_data(self) -> bool:
        return self._pos < len(self._buf)

    def _recv(self) -> bool:
        """Append what the socket has; False at EOF. TimeoutError past the deadline."""
        if self.deadline is not None:
            import time
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the header section took too long")
            self._sock.settimeout(left)
        data = self._sock.recv(_BODY_BLOCK)
        if not data:
            return False
        self._buf = self._buf[self._pos:] + data if self._pos < len(self._buf) else data
        self._pos = 0
        return True

    def wait_for_data(self, timeout: float) -> bool:
        """Wait up to `timeout` for a request's first byte; False when none came."""
        if self.has_data():
            return True
        self._sock.settimeout(timeout)
        try:
            return self._recv()
        except OSError:   # timed out, reset, or shut down by the server to evict us
            return False

    def read_line(self, limit: int) -> bytes | None:
        """The next line with its line ending (check it: it may be a bare LF); None when
        longer than `limit` bytes before its CRLF. The client leaving raises ConnectionError."""
        start = self._pos
        while True:
            end = self._buf.find(b"\n", start, self._pos + limit + 2)
            if end >= 0:
                line = self._buf[self._pos:end + 1]
                self._pos = end + 1
                return line
            scanned = len(self._buf) - self._pos
            if scanned > limit + 1:
                return None
            if not self._recv():
                raise _client_gone()
            start = self._pos + scanned   # each byte is searched once

    def read1(self, size: int) -> bytes:
        """Up to `size` bytes (at least one); b"" at EOF."""
        if self._pos >= len(self._buf) and not self._recv():
            return b""
        block = self._buf[self._pos:self._pos + size]
        self._pos += len(block)
        return block

    def read_exactly(self, size: int) -> bytes:
        parts, left = [], size
        while left and (block := self.read1(left)):
            parts.append(block)
            left -= len(block)
        return b"".join(parts)


class _RequestHead:
    """A request line and its header fields, as read: names lowercased, values raw bytes."""

    __slots__ = ("fields", "method", "target", "version")

    def __init__(self, method: str, target: bytes, version: str,
                 fields: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields


def _read_head(reader: _SocketReader, bounds: _Bounds) -> _RequestHead:
    """Read one request head; _Refusal when it cannot be read one way only."""
    method, target, version = _parse_request_line(_read_request_line(reader, bounds))
    return _RequestHead(method, target, version, _read_fields(reader, bounds))


def _read_request_line(reader: _SocketReader, bounds: _Bounds) -> bytes:
    for _ in range(_MAX_BLANK_LINES + 1):
        line = reader.read_line(bounds.max_request_line)
        if line is None:
            raise _Refusal(414, f"the request line is longer than {bounds.max_request_line} bytes")
        if not line.endswith(b"\r\n"):
            raise _Refusal(400, "the request line does not end with CRLF")
        if line != b"\r\n":   # RFC 9112 2.2: empty lines before a request line are ignored
            return line[:-2]
    raise _Refusal(400, "too many empty lines before the request line")


def _parse_request_line(line: bytes) -> tuple[str, bytes, str]:
    found = _REQUEST_LINE.fullmatch(line)
    if found is None:
        raise _Refusal(400, "the request line is not `method SP target SP HTTP/1.x`")
    method, target, version = found.groups()
    served = _SERVED_VERSIONS.get(version)
    if served is None:
        raise _Refusal(505, f"{version.decode()} is not served: use HTTP/1.1 or HTTP/1.0")
    return method.decode("ascii"), target, served


def _read_fields(reader: _SocketReader, bounds: _Bounds) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    budget = bounds.max_header_bytes
    while True:
        line = reader.read_line(budget)
        if line is None or len(line) > budget:
            raise _Refusal(431, f"the header section passes {bounds.max_header_bytes} bytes")
        budget -= len(line)
        if line == b"\r\n":
            return fields
        found = _FIELD_LINE.fullmatch(line, 0, len(line) - 2)
        if found is None or not line.endswith(b"\r\n"):
            raise _Refusal(400, "malformed header line")
        if len(fields) == bounds.max_header_fields:
            raise _Refusal(431, f"more than {bounds.max_header_fields} header fields")
        fields.append((found.group(1).lower(), found.group(2).strip(b" \t")))


# -- servers: request bodies for the built-in server

_DRAIN_LIMIT = 64 * 1024   # unread body bytes swallowed to keep a connection alive
_LINGER_SECONDS = 2.0      # reading time granted to a client still sending when we hang up
_CHUNK_LINE_LIMIT = 4096
_TRAILER_LINE_LIMIT = 32
# RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS name [ BWS "="
# BWS ( token / quoted-string ) ] ). The extensions are ignored but checked: a CR or NUL in
# one is read differently by a proxy. Nothing else (no trailing space) may follow the size.
_QUOTED_STRING = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_CHUNK_SIZE = _lazy_regex(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*" + _TOKEN
                         + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*")


class _BadChunk(ValueError):
    """The chunked request body is malformed (the framework answers 400)."""


def _client_gone() -> ConnectionResetError:
    return ConnectionResetError("the client closed the connection before the end of the body")


class _RequestBody:
    """`wsgi.input` for one request: reads stop at the end of the body, never past it."""

    def __init__(self, reader: _SocketReader) -> None:
        self._reader = reader
        self._pending = b""    # bytes readline() read past a newline; served first
        self.broken = False    # a read failed: the connection is at an unknown position
        self.on_first_read: Callable[[], None] | None = None   # sends "100 Continue"

    @property
    def finished(self) -> bool:
        """True when the whole body has come off the socket."""
        raise NotImplementedError

    def unread_fits(self, limit: int) -> bool:
        """True when what is left of the body can be drained to keep the connection."""
        raise NotImplementedError

    def _next_block(self, size: int) -> bytes:
        """At most `size` bytes from the socket; b"" at the end of the body."""
        raise NotImplementedError

    def _read_block(self, size: int) -> bytes:
        if self._pending:
            block, self._pending = self._pending[:size], self._pending[size:]
            return block
        if self.on_first_read is not None:
            send_continue, self.on_first_read = self.on_first_read, None
            send_continue()
        try:
            return self._next_block(size)
        except (OSError, ValueError):
            self.broken = True
            raise

    def read(self, size: int | None = -1) -> bytes:
        wanted = -1 if size is None or size < 0 else size
        parts = []
        while wanted != 0:
            block = self._read_block(_BODY_BLOCK if wanted < 0 else min(wanted, _BODY_BLOCK))
            if not block:
                break
            parts.append(block)
            if wanted > 0:
                wanted -= len(block)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None or size < 0 else size
        parts: list[bytes] = []
        length = 0
        while limit < 0 or length < limit:
            block = self._read_block(_BODY_BLOCK if limit < 0 else min(_BODY_BLOCK, limit - length))
            if not block:
                break
            end = block.find(b"\n") + 1
            if end:
                self._pending = block[end:] + self._pending
                parts.append(block[:end])
                break
            parts.append(block)
            length += len(block)
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def can_drain(self, limit: int) -> bool:
        """True when the unread rest of the body can be read and dropped to keep the
        connection: it fits, and the client is not waiting for a "100 Continue" first."""
        if self.finished:
            return True
        return not self.broken and self.on_first_read is None and self.unread_fits(limit)

    def drain(self, limit: int) -> bool:
        """Read and drop up to `limit` unread bytes; True when the body is then finished."""
        if not self.can_drain(limit):
            return False
        try:
            while limit >= 0:
                block = self._read_block(_BODY_BLOCK)
                if not block:
                    return True
                limit -= len(block)
        except (OSError, ValueError):
            return False
        return False


class _LengthBody(_RequestBody):
    """A body of Content-Length bytes (0 when the request has no body)."""

    def __init__(self, reader: _SocketReader, length: int) -> None:
        super().__init__(reader)
        self._left = length

    @property
    def finished(self) -> bool:
        return self._left == 0

    def unread_fits(self, limit: int) -> bool:
        return self._left <= limit

    def _next_block(self, size: int) -> bytes:
        size = min(size, self._left)
        if size <= 0:
            return b""
        block: bytes = self._reader.read1(size)
        if not block:
            raise _client_gone()
        self._left -= len(block)
        return block


class _ChunkedBody(_RequestBody):
    """A `Transfer-Encoding: chunked` body, decoded; trailers are checked and ignored."""

    def __init__(self, reader: _SocketReader) -> None:
        super().__init__(reader)
        self._chunk_left = 0
        self.done = False

    @property
    def finished(self) -> bool:
        return self.done

    def unread_fits(self, limit: int) -> bool:
        return self.done   # the size of what is left is unknown until the last chunk

    def _next_block(self, size: int) -> bytes:
        if self.done:
            return b""
        if self._chunk_left == 0:
            self._chunk_left = self._read_chunk_size()
            if self._chunk_left == 0:
                self._skip_trailers()
                self.done = True
                return b""
        block: bytes = self._reader.read1(min(size, self._chunk_left))
        if not block:
            raise _client_gone()
        self._chunk_left -= len(block)
        if self._chunk_left == 0 and self._reader.read_exactly(2) != b"\r\n":
            raise _BadChunk("chunk data is not followed by CRLF")
        return block

    def _read_line(self) -> bytes:
        line = self._reader.read_line(_CHUNK_LINE_LIMIT)
        if line is None or not line.endswith(b"\r\n"):
            raise _BadChunk("chunk line too long or not ended by CRLF")
        return line[:-2]

    def _read_chunk_size(self) -> int:
        line = self._read_line()
        found = _CHUNK_SIZE.fullmatch(line)
        if found is None:
            raise _BadChunk(f"bad chunk size line {line[:20]!r}")
        return int(found.group(1), 16)

    def _skip_trailers(self) -> None:
        for _ in range(_TRAILER_LINE_LIMIT):
            line = self._read_line()
            if not line:
                return
            if not _FIELD_LINE.fullmatch(line):
                raise _BadChunk("malformed trailer field line")
        raise _BadChunk("too many trailer lines")


# -- servers: from a request head to a WSGI environ

_SINGLE_FIELDS = frozenset({"HTTP_HOST", "CONTENT_TYPE"})   # given twice: 400
_FIELD_KEYS: dict[bytes, str | None] = {}   # b"user-agent" -> "HTTP_USER_AGENT"
_LENGTH_TEXT = _lazy_regex(r"[0-9]{1,18}")


def _field_key(name: bytes) -> str | None:
    """The environ key of a header field; None for a name with `_`.

    "X-User_Id" would become HTTP_X_USER_ID just like "X-User-Id", and so could pose as a
    header that a trusted proxy sets; nginx, gunicorn and waitress drop such names too.
    """
    key = _FIELD_KEYS.get(name, "")
    if key != "":
        return key
    text = name.decode("ascii").upper()
    if "_" in text:
        key = None
    elif text in ("CONTENT-TYPE", "CONTENT-LENGTH"):
        key = text.replace("-", "_")
    else:
        key = "HTTP_" + text.replace("-", "_")
    if len(_FIELD_KEYS) < 1000:   # clients choose names: the cache stays bounded
        _FIELD_KEYS[name] = key
    return key


def _fields_environ(fields: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """HTTP_* (and CONTENT_*) entries; repeated fields joined, Host or Content-Type twice: 400."""
    found: dict[str, str] = {}
    for name, value in fields:
        key = _field_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        previous = found.get(key)
        if previous is None:
            found[key] = text
        elif key in _SINGLE_FIELDS:
            raise _Refusal(400, f"{name.decode()} is given twice")
        elif key == "CONTENT_LENGTH":
            if previous != text:
                raise _Refusal(400, "two Content-Length fields differ")
        else:   # RFC 9110 5.3: a list field; cookies are joined as one Cookie header reads
            found[key] = previous + ("; " if key == "HTTP_COOKIE" else ",") + text
    return found


def _split_target(method: str, target: bytes) -> tuple[str, str, str | None]:
    """(PATH_INFO, QUERY_STRING, the authority of an absolute-form target or None)."""
    authority = None
    if target[:1] != b"/":
        if target == b"*":
            if method != "OPTIONS":
                raise _Refusal(400, "the target * is for OPTIONS only")
            return "*", "", None
        found = _ABSOLUTE_TARGET.fullmatch(target)
        if found is None or not _HOST_VALUE.fullmatch(found.group(1)):
            raise _Refusal(400, "the request target is not a path or an http(s) URL")
        authority = found.group(1).decode("ascii")
        target = found.group(2) or b"/"
    path, _, query = target.partition(b"#")[0].partition(b"?")
    path = unquote_to_bytes(path) if _PERCENT in path else path
    return (path or b"/").decode("latin-1"), query.decode("latin-1"), authority


def _body_framing(environ: dict[str, str], version: str) -> int | None:
    """The body's length, or None when it is chunked; _Refusal for any ambiguous framing."""
    codings = environ.pop("HTTP_TRANSFER_ENCODING", None)
    length = environ.get("CONTENT_LENGTH")
    if codings is not None:
        # Both framings at once, or chunked on HTTP/1.0, is how requests are smuggled past
        # a proxy that reads the other framing (RFC 9112 6.1).
        if length is not None or version != "HTTP/1.1":
            raise _Refusal(400, "ambiguous body framing: Transfer-Encoding with Content-Length "
                                "or on HTTP/1.0")
        if [coding.strip(" \t").lower() for coding in codings.split(",")] != ["chunked"]:
            raise _Refusal(501, "only the chunked transfer coding is implemented")
        environ["CONTENT_LENGTH"] = ""
        return None
    if length is None:
        environ["CONTENT_LENGTH"] = ""
        return 0
    if not _LENGTH_TEXT.fullmatch(length):
        raise _Refusal(400, "Content-Length is not a number")
    environ["CONTENT_LENGTH"] = str(int(length))
    return int(length)


def _request_environ(head: _RequestHead, base: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The request's environ (wsgi.input aside) and its body length (None: chunked)."""
    fields = _fields_environ(head.fields)
    host = fields.get("HTTP_HOST")
    if host is None and head.version == "HTTP/1.1":
        raise _Refusal(400, "an HTTP/1.1 request needs a Host header")
    if host is not None and not _HOST_TEXT.fullmatch(host):
        raise _Refusal(400, "malformed Host header")
    path, query, authority = _split_target(head.method, head.target)
    if authority is not None:
        fields["HTTP_HOST"] = authority   # RFC 9112 3.2.2: the target's authority wins
    length = _body_framing(fields, head.version)
    environ = base.copy()
    environ.update(fields)
    environ["REQUEST_METHOD"] = head.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = head.version
    return environ, length


def _wants_keep_alive(environ: dict[str, Any]) -> bool:
    if environ["SERVER_PROTOCOL"] != "HTTP/1.1":
        return False   # HTTP/1.0 keep-alive needs headers of its own: not worth it
    tokens = environ.get("HTTP_CONNECTION")
    return tokens is None or "close" not in [t.strip(" \t").lower() for t in tokens.split(",")]


class _FileWrapper:
    """wsgi.file_wrapper: the file's blocks; the server uses sendfile() when it can."""

    def __init__(self, filelike: Any, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.filelike.read(self.block_size), b"")

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


# -- servers: running the app for one request

_STATUS_TEXT = _lazy_regex(r"[1-9][0-9][0-9] [^\x00-\x1f\x7f]*")
_RESPONSE_NAME = _lazy_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESPONSE_VALUE_BAD = _lazy_regex(r"[\x00-\x08\x0a-\x1f\x7f]")
_SERVER_SOFTWARE = f"microhandler Python/{sys.version.split(' ', 1)[0]}"
_date_cache: list[Any] = [0, ""]


def _date_header() -> str:
    import time
    now = int(time.time())
    if _date_cache[0] != now:   # formatting a date costs more than the rest of the head
        _date_cache[:] = [now, f"Date: {_http_date(now)}\r\n"]
    return str(_date_cache[1])


def _check_response_head(status: str, headers: list[tuple[str, str]]) -> None:
    """Refuse what would break the framing or split the response (PEP 3333's rules)."""
    if not isinstance(status, str) or not _STATUS_TEXT.fullmatch(status):
        raise ValueError(f"malformed WSGI status {status!r}")
    for name, value in headers:
        if (not isinstance(name, str) or not isinstance(value, str)
                or not _RESPONSE_NAME.fullmatch(name) or _RESPONSE_VALUE_BAD.search(value)):
            raise ValueError(f"malformed response header {name!r}: {value!r}")
        if name.lower() in _HOP_BY_HOP and name.lower() != "connection":
            raise ValueError(f"a WSGI app must not set the hop-by-hop header {name!r}")


class _Exchange:
    """One request: runs the app, frames its response for keep-alive, counts what was sent."""

    def __init__(self, conn: _Connection, environ: dict[str, Any], body: _RequestBody) -> None:
        self.conn = conn
        self.body = body
        self.head_only = environ["REQUEST_METHOD"] == "HEAD"
        self.keep_alive = _wants_keep_alive(environ) and not conn.server.closing
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.limit: int | None = None   # body bytes the client will read; None: until close
        self.sent = 0
        self.status_code = "-"
        self.completed = False   # the whole response went out and the app's close() ran

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise RuntimeError("start_response() called twice without exc_info")
        headers = list(headers)
        _check_response_head(status, headers)
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        """Send a block of the body (the headers go out with the first one)."""
        if not self.headers_sent:
            self._send_head(data, whole=False)
            return
        if self.limit is not None and self.sent + len(data) > self.limit:
            data = self._clip(data)
        if data:
            self.conn.send(data)
            self.sent += len(data)

    def _clip(self, data: bytes) -> bytes:
        """Drop what the client will not read: HEAD/204/304 bodies, bytes past Content-Length."""
        assert self.limit is not None
        if self.limit and self.keep_alive:
            _server_log.warning("%s: the response is longer than its Content-Length; truncated",
                                self.conn.log_target)
            self.keep_alive = False
        return data[:max(self.limit - self.sent, 0)]

    def _send_head(self, first: bytes, *, whole: bool) -> None:
        """Send the status line and headers, with `first` (the whole body when `whole`)."""
        if not self.status:
            raise RuntimeError("the WSGI app sent a body before calling start_response()")
        code = int(self.status[:3])
        self.status_code = str(code)
        lines = [f"HTTP/1.1 {self.status}\r\n"]
        declared = None
        for name, value in self.headers:
            lower = name.lower()
            if lower == "content-length":
                if code < 200 or code == 204:
                    continue   # RFC 9110 forbids it there
                declared = int(value) if _LENGTH_TEXT.fullmatch(value) else None
                continue
            if lower == "connection":
                self.keep_alive = self.keep_alive and "close" not in value.lower()
                continue
            lines.append(f"{name}: {value}\r\n")
        no_body = self.head_only or code < 200 or code in (204, 304)
        if declared is None and whole and not no_body:
            declared = len(first)   # the body is one block: its length is known
        if declared is not None:
            lines.append(f"Content-Length: {declared}\r\n")
        self.limit = 0 if no_body else declared
        # Without a length, only closing tells the client where the body ends; an unread
        # body too large to drain also ends the connection.
        if self.limit is None or not self.body.can_drain(_DRAIN_LIMIT):
            self.keep_alive = False
        self._send_lines(lines, first)

    def _send_lines(self, lines: list[str], first: bytes) -> None:
        if self.limit is not None and len(first) > self.limit:
            first = self._clip(first)   # before the Connection header is chosen
        lowered = {line[:line.index(":")].lower() for line in lines[1:]}
        if "date" not in lowered:
            lines.append(_date_header())
        if "server" not in lowered:
            lines.append(f"Server: {_SERVER_SOFTWARE}\r\n")
        if not self.keep_alive:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.headers_sent = True
        self.sent += len(first)
        if len(first) <= _BODY_BLOCK:
            self.conn.send(head + first)   # one packet for a small response
        else:
            self.conn.send(head)
            self.conn.send(first)

    def run(self, app: Callable[..., Any], environ: dict[str, Any]) -> None:
        """Call the app and send its response; errors are logged and end the connection."""
        result: Any = None
        try:
            result = app(environ, self.start_response)
            if isinstance(result, _FileWrapper) and self._send_file(result):
                pass
            else:
                self._send_body(result)
            self._close(result)
            result = None
            self.completed = True
        except (ConnectionError, TimeoutError):   # the client left or stopped reading
            self.keep_alive = False
        except Exception:
            _server_log.exception("error while serving %s", self.conn.log_target)
            self.keep_alive = False
            if not self.headers_sent:
                self.conn.send_error_response(500, "the application raised an error")
                self.status_code = "500"
        finally:
            if result is not None:
                self._close(result)
        if self.limit is not None and self.sent < self.limit and not self.head_only:
            self.keep_alive = False   # the client still waits for the missing bytes

    def _send_body(self, result: Iterable[bytes]) -> None:
        whole = isinstance(result, (list, tuple)) and len(result) <= 1
        for data in result:
            if self.headers_sent:
                self.write(data)
            elif data:   # PEP 3333: the headers wait for the first non-empty block
                self._send_head(data, whole=whole)
        if not self.headers_sent:
            self._send_head(b"", whole=True)

    def _send_file(self, wrapper: _FileWrapper) -> bool:
        """Send a file_wrapper's file with sendfile(); False when its length is unknown."""
        self._send_head(b"", whole=False)
        if self.limit is None:
            return False
        left = self.limit - self.sent
        if left > 0:
            self.sent += self.conn.send_file(wrapper.filelike, left)
        return True

    def _close(self, result: Any) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            close()   # the framework's request_finished
        except Exception:
            _server_log.exception("error closing the response of %s", self.conn.log_target)


# -- servers: one connection, many requests

def _linger_close(sock: socket.socket) -> None:
    """Half-close, then read what the client still sends (bounded in time).

    Closing a socket that has unread data makes the kernel send a reset, which can destroy
    the response (a 413, say) before the client has read it.
    """
    import socket
    import time
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(_BODY_BLOCK):
                return
    except OSError:
        pass


class _Connection:
    """A client's connection: reads requests one after the other, keep-alive between them."""

    def __init__(self, server: _BuiltinServer, sock: socket.socket, address: Any) -> None:
        self.server = server
        self.sock = sock
        self.client = str(address[0]) if isinstance(address, tuple) else "-"
        self.reader = _SocketReader(sock)
        self.log_target = "-"
        self.linger = False   # close gently: the client may still be sending
        self.evicted = False  # closed by the server to make room for a new client

    def serve(self) -> None:
        """Serve requests until either side ends the connection, then close it."""
        try:
            self._serve_requests()
        except OSError as exc:   # the client left or went silent mid-request
            _server_log.debug("connection from %s ended: %r", self.client, exc)
        except Exception:
            _server_log.exception("unexpected error on the connection from %s", self.client)
        finally:
            self.server.forget(self)
            if self.linger:
                _linger_close(self.sock)
            self.sock.close()

    def _serve_requests(self) -> None:
        import time
        bounds = self.server.bounds
        wait = bounds.header_timeout   # a new client connected to send a request...
        due: float | None = time.monotonic() + bounds.header_timeout   # ...due by then
        while self.server.enter_idle(self):
            if not self.reader.wait_for_data(wait) or not self.server.leave_idle(self):
                return   # silent, gone, or closed to make room for a new client
            try:
                if not self._serve_one(bounds, due):
                    return
            finally:
                self.server.done(self)
            wait, due = bounds.keepalive_timeout, None   # then from each first byte

    def _serve_one(self, bounds: _Bounds, due: float | None) -> bool:
        """Read one request and answer it; True when the connection can carry another."""
        import time
        started = time.perf_counter()
        self.reader.deadline = due or time.monotonic() + bounds.header_timeout
        try:
            head = _read_head(self.reader, bounds)
            environ, length = _request_environ(head, self.server.base_environ)
        except _Refusal as refusal:
            self._refuse(refusal.status, refusal.reason)
            return False
        except TimeoutError:
            self._refuse(408, f"the header section did not arrive within {bounds.header_timeout} s")
            return False
        finally:
            self.reader.deadline = None
        self.sock.settimeout(_IO_TIMEOUT)
        self.log_target = f"{head.method} {_loggable(environ['PATH_INFO'])}"
        environ["REMOTE_ADDR"] = self.client
        body = self._body(environ, length)
        if body is None:
            return False
        environ["wsgi.input"] = body
        exchange = _Exchange(self, environ, body)
        if environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            body.on_first_read = lambda: None if exchange.headers_sent else self.send(
                b"HTTP/1.1 100 Continue\r\n\r\n")
        exchange.run(self.server.app, environ)
        keep = exchange.keep_alive and exchange.completed and body.drain(_DRAIN_LIMIT)
        self.linger = not keep and not body.finished
        self.server.log.info("%s %s %s %.1fms", self.log_target, exchange.status_code,
                             exchange.sent, (time.perf_counter() - started) * 1000)
        return keep

    def _body(self, environ: dict[str, Any], length: int | None) -> _RequestBody | None:
        expect = environ.get("HTTP_EXPECT")
        if expect is not None and expect.lower() != "100-continue":
            self._refuse(417, "only Expect: 100-continue is understood")
            return None
        return _ChunkedBody(self.reader) if length is None else _LengthBody(self.reader, length)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_file(self, file: Any, count: int) -> int:
        """Send up to `count` bytes of `file` from its position; the number sent."""
        return int(self.sock.sendfile(file, file.tell(), count))

    def send_error_response(self, status: int, reason: str) -> None:
        """A complete response of our own: status line, Content-Length, Connection: close."""
        phrase = _reason_phrase(status)
        body = f"{status} {phrase}: {reason}\n".encode()
        head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n{_date_header()}Connection: close\r\n\r\n")
        try:
            self.sock.settimeout(_IO_TIMEOUT)
            self.sock.sendall(head.encode("latin-1") + body)
        except OSError:
            pass

    def _refuse(self, status: int, reason: str) -> None:
        self.send_error_response(status, reason)
        self.linger = True
        _server_log.info("%s refused: %s %s", self.client, status, reason)


# -- servers: what make_server() returns

class _ServerAdapter:
    """A bound server: `.host`, `.port`, `.url`, `.serve_forever()`, `.shutdown()`."""

    def __init__(self, host: str, port: int) -> None:
        import threading
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._running = self._stopped = self._closed = False
        self._done = threading.Event()
        self._serving_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve requests until shutdown() is called, from any thread."""
        import threading
        with self._lock:
            if self._running:
                raise RuntimeError("serve_forever() is already running")
            if self._stopped:
                return
            self._running = True
            self._serving_thread = threading.current_thread()
        try:
            self._run_loop()
        finally:
            if self._stopped:
                self._close_once()   # shutdown() may have been called from this thread
            self._done.set()

    def shutdown(self) -> None:
        """Stop serve_forever(), close the socket and the connections; safe to call twice."""
        import threading
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            running = self._running
        if running and not self._done.is_set():
            self._stop_loop()
            if threading.current_thread() is self._serving_thread:
                return   # a signal handler in the serving thread: serve_forever() finishes
            self._done.wait(_STOP_TIMEOUT)
        self._close_once()

    def _close_once(self) -> None:
        with self._close_lock:   # a second caller waits until the first has closed
            if not self._closed:
                self._closed = True
                self._close()

    def _run_loop(self) -> None:
        raise NotImplementedError

    def _stop_loop(self) -> None:
        """Ask the loop to return, without waiting (may be called from the loop's thread)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class _BuiltinServer(_ServerAdapter):
    """A thread per connection, at most `max_connections` of them; the listening socket
    is bound at construction."""

    def __init__(self, app: Callable[..., Any], host: str, port: int, bounds: _Bounds) -> None:
        import logging
        import socket
        import threading
        self.log = logging.getLogger(_server_log.name)   # PERF: not looked up per request
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Restart on the same port at once despite connections in TIME_WAIT.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(_LISTEN_BACKLOG)
        except OSError:
            self._listener.close()
            raise
        bound_host, bound_port = self._listener.getsockname()[:2]
        self.app = app
        self.bounds = bounds
        self.base_environ: dict[str, Any] = {
            "SERVER_NAME": str(bound_host), "SERVER_PORT": str(bound_port), "SCRIPT_NAME": "",
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": _SERVER_SOFTWARE,
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True,   # our wsgi.input says EOF at the body's end
            "wsgi.file_wrapper": _FileWrapper,
        }
        self._connections = threading.Condition()
        self._idle: dict[_Connection, None] = {}   # oldest first: the first to be closed
        self._open = 0       # connections accepted and not yet closed
        self._busy = 0       # connections in the middle of a request
        self._evicting = 0   # idle connections told to close, not yet closed
        self._stopping = False
        self.closing = False
        super().__init__(host, int(bound_port))

    def _run_loop(self) -> None:
        import selectors
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stopping:
                if selector.select(_ACCEPT_POLL) and self._make_room():
                    self._accept()

    def _make_room(self) -> bool:
        """Wait until one more connection may be served, closing idle ones if need be."""
        import socket
        limit = self.bounds.max_connections
        with self._connections:
            while self._open >= limit and not self._stopping:
                if self._open - self._evicting >= limit and self._idle:
                    oldest = next(iter(self._idle))
                    del self._idle[oldest]
                    self._evicting += 1
                    oldest.evicted = True
                    try:
                        oldest.sock.shutdown(socket.SHUT_RDWR)   # wakes its thread: it closes
                    except OSError:
                        pass
                else:   # the new client waits in the listen backlog until a connection ends
                    self._connections.wait(_ACCEPT_POLL)
            return not self._stopping

    def _accept(self) -> None:
        import socket
        import threading
        try:
            sock, address = self._listener.accept()
        except OSError:   # the client gave up already, or no descriptor is left for now
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # small responses leave now
        connection = _Connection(self, sock, address)
        with self._connections:
            self._open += 1
        thread = threading.Thread(target=connection.serve, daemon=True,
                                  name=f"microhandler-{connection.client}")
        try:
            thread.start()
        except RuntimeError:   # no thread can be started: the client is refused
            self.forget(connection)
            sock.close()

    def enter_idle(self, connection: _Connection) -> bool:
        """Mark a connection as waiting for a request; False when the server is closing."""
        with self._connections:
            if self.closing or connection.evicted:
                return False
            self._idle[connection] = None
            return True

    def leave_idle(self, connection: _Connection) -> bool:
        """A request began to arrive; False when the connection was closed to make room."""
        with self._connections:
            if connection not in self._idle:
                return False
            del self._idle[connection]
            self._busy += 1
            return True

    def done(self, connection: _Connection) -> None:
        with self._connections:
            self._busy -= 1
            self._connections.notify_all()

    def forget(self, connection: _Connection) -> None:
        with self._connections:
            self._idle.pop(connection, None)
            self._open -= 1
            if connection.evicted:
                self._evicting -= 1
            self._connections.notify_all()

    def _stop_loop(self) -> None:
        self._stopping = True   # the loop sees it within _ACCEPT_POLL seconds

    def _close(self) -> None:
        """Refuse new requests, hang up idle connections, let busy ones finish (bounded)."""
        import socket
        self._stopping = True
        self._listener.close()
        with self._connections:
            self.closing = True
            idle, self._idle = list(self._idle), {}
        for connection in idle:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)   # wakes the thread waiting
            except OSError:
                pass
        with self._connections:
            self._connections.wait_for(lambda: self._busy == 0, timeout=_GRACE_SECONDS)


def _import_waitress() -> tuple[Any, Any, Any]:
    try:
        from waitress import wasyncore
        from waitress.server import create_server
        from waitress.trigger import trigger
    except ImportError as exc:
        raise _ServerNotInstalled(_WAITRESS_MISSING, name="waitress") from exc
    return create_server, wasyncore.close_all, trigger


class _WaitressServer(_ServerAdapter):
    def __init__(self, app: Callable[..., Any], host: str, port: int, threads: int) -> None:
        import threading
        create_server, self._close_all, make_trigger = _import_waitress()
        self._map: dict[Any, Any] = {}   # our own socket map, so we can close all of it
        self._waitress = create_server(app, map=self._map, host=host, port=port, threads=threads)
        self._wake = make_trigger(self._map)   # runs a function in the loop's thread
        self._sockets_lock = threading.Lock()
        self._sockets_closed = False
        listen = getattr(self._waitress, "effective_listen", None)   # several addresses
        real_port = listen[0][1] if listen else self._waitress.effective_port
        super().__init__(host, int(real_port))

    def _run_loop(self) -> None:
        self._waitress.run()   # returns once the socket map is empty

    def _stop_loop(self) -> None:
        try:
            self._wake.pull_trigger(self._close_sockets)
        except OSError:
            pass

    def _close_sockets(self) -> None:
        with self._sockets_lock:
            if self._sockets_closed:
                return
            self._sockets_closed = True
        self._close_all(self._map, ignore_all=True)

    def _close(self) -> None:
        self._close_sockets()
        self._waitress.task_dispatcher.shutdown(timeout=_GRACE_SECONDS)


def _import_uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise _ServerNotInstalled(_UVICORN_MISSING, name="uvicorn") from exc
    return uvicorn


def _asgi_app_to_serve(app: Any) -> Callable[..., Any]:
    """What an ASGI server serves for `app`: an App's `app.asgi`, or an ASGI app itself."""
    asgi: Callable[..., Any] | None = getattr(app, "asgi", None)
    if asgi is not None:
        return asgi
    if _is_async(app):
        served: Callable[..., Any] = app
        return served
    raise TypeError(f"uvicorn serves ASGI applications: {_name_of(app)} is neither an App "
                    "nor an ASGI application")


class _UvicornServer(_ServerAdapter):
    """uvicorn serving `app.asgi` on a socket bound here, so port 0 is known at once.
    Sync views run in a pool of `threads` threads (the loop's default executor)."""

    def __init__(self, app: Callable[..., Any], host: str, port: int, threads: int) -> None:
        import logging
        import socket
        uvicorn = _import_uvicorn()
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._socket = socket.socket(family, kind, proto)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(2048)
            # uvicorn's own logging setup only when the program has none (as for wsgiref).
            options = {} if not logging.getLogger().handlers else {"log_config": None}
            self._config = uvicorn.Config(_asgi_app_to_serve(app),
                                          timeout_graceful_shutdown=int(_GRACE_SECONDS),
                                          **options)
        except BaseException:
            self._socket.close()
            raise
        self._server = uvicorn.Server(self._config)
        self._threads = threads
        super().__init__(host, self._socket.getsockname()[1])

    def _run_loop(self) -> None:
        import asyncio
        # uvicorn's choice of loop (uvloop when installed), where this Python can take it.
        factory = getattr(self._config, "get_loop_factory", lambda: None)()
        runner = getattr(asyncio, "Runner", None)
        if factory is None or runner is None:
            asyncio.run(self._serve())
            return
        with runner(loop_factory=factory) as loop_runner:
            loop_runner.run(self._serve())

    async def _serve(self) -> None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(self._threads, thread_name_prefix="microhandler-sync")
        asyncio.get_running_loop().set_default_executor(pool)
        await self._server.serve(sockets=[self._socket])

    def _stop_loop(self) -> None:
        self._server.should_exit = True  # uvicorn polls it every 0.1 s

    def _close(self) -> None:
        self._socket.close()


def make_server(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 8000, *,
                server: str = "wsgiref", threads: int = 8,
                header_timeout: float = _HEADER_TIMEOUT,
                keepalive_timeout: float = _KEEPALIVE_TIMEOUT,
                max_connections: int = _MAX_CONNECTIONS,
                max_request_line: int = _MAX_REQUEST_LINE,
                max_header_bytes: int = _MAX_HEADER_BYTES,
                max_header_fields: int = _MAX_HEADER_FIELDS) -> _ServerAdapter:
    """Bind `host:port` (port 0 picks a free one) and return a server for `app`.

    The result has `.host`, `.port` (the real one), `.url`, `.serve_forever()` and
    `.shutdown()` (from any thread, idempotent). `"wsgiref"` is the built-in server: a
    thread per connection, bounded by the other keyword options (`threads` is unused);
    `"waitress"` runs `threads` workers, with waitress's own bounds, and must be installed.
    `"uvicorn"` serves `app.asgi`, sync views in a pool of `threads`, and must be installed.
    """
    if server == "wsgiref":
        bounds = _Bounds(header_timeout=header_timeout, keepalive_timeout=keepalive_timeout,
                         max_connections=max_connections, max_request_line=max_request_line,
                         max_header_bytes=max_header_bytes, max_header_fields=max_header_fields)
        return _BuiltinServer(app, host, port, bounds)
    if server == "waitress":
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        return _WaitressServer(app, host, port, threads)
    if server == "uvicorn":
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        return _UvicornServer(app, host, port, threads)
    choices = ", ".join(repr(choice) for choice in _SERVER_CHOICES)
    raise ValueError(f"unknown server {server!r}: choose one of {choices}")


def _check_server_installed(server: str) -> None:
    if server not in _SERVER_CHOICES:
        choices = ", ".join(repr(choice) for choice in _SERVER_CHOICES)
        raise ValueError(f"unknown server {server!r}: choose one of {choices}")
    if server == "waitress":
        _import_waitress()
    elif server == "uvicorn":
        _import_uvicorn()


# -- servers: serve(): signals, and the reloader

class _StopFlag:
    """A signal handler that only records the signal; the waiting loop polls it.

    Setting a threading.Event from a handler could deadlock on the Event's own lock.
    """

    stop = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.stop = True


class _StopOnSignals:
    """Route SIGINT and SIGTERM to `flag` (main thread only), restoring the old handlers.

    A class, not a @contextlib.contextmanager: the decorator would import contextlib (and
    with it collections and functools) when microhandler is imported."""

    def __init__(self, flag: _StopFlag) -> None:
        self.flag = flag
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            return   # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                continue   # started with Ctrl-C ignored (nohup, a background job): keep it so
            self.previous[signum] = signal.signal(signum, self.flag)

    def __exit__(self, *exc_info: object) -> None:
        import signal
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _ensure_console_logging() -> None:
    """Show request and reloader lines on stderr unless the program configured logging."""
    import logging
    if logging.getLogger().handlers:
        return
    for logger in (_server_log, _reload_log):
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
            logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def _serve_until_stopped(httpd: _ServerAdapter, *, watch_parent: bool) -> None:
    """Serve in a thread until SIGINT/SIGTERM (or the reloader's exit), then shut down."""
    import threading
    import time
    failures: list[BaseException] = []

    def run() -> None:
        try:
            httpd.serve_forever()
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run, name="microhandler-serve", daemon=True)
    flag = _StopFlag()
    parent = os.getppid() if watch_parent else None
    with _StopOnSignals(flag):
        worker.start()
        try:
            while worker.is_alive() and not flag.stop:
                if parent is not None and os.getppid() != parent:
                    break   # the reloader died: do not live on as an orphan holding the port
                time.sleep(_SIGNAL_POLL)
        except KeyboardInterrupt:
            pass   # SIGINT still raises when our handler could not be installed
        finally:
            httpd.shutdown()
            worker.join(_STOP_TIMEOUT)
    if failures:
        raise failures[0]


_RELOADER_ENV = "MICROHANDLER_RELOADER_CHILD"   # internal plumbing, not configuration
_RELOAD_POLL = 0.5
_CHILD_STOP_TIMEOUT = 10.0
_MAX_WATCHED_FILES = 5000
_MAX_SCANNED_ENTRIES = 50_000
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})


def _is_reloader_child() -> bool:
    return os.environ.get(_RELOADER_ENV) == "1"


def _source_snapshot(root: str) -> dict[str, tuple[int, int]]:
    """Modification time and size of the .py files under `root`, in a bounded walk."""
    found: dict[str, tuple[int, int]] = {}
    pending, scanned = [root], 0
    while pending and len(found) < _MAX_WATCHED_FILES and scanned < _MAX_SCANNED_ENTRIES:
        try:
            with os.scandir(pending.pop()) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue
        scanned += len(entries)
        for entry in entries:
            if entry.name.startswith("."):
                continue   # .git, .venv, editor lock files such as .#app.py
            try:
                if entry.is_dir(follow_symlinks=False):
                    if (entry.name not in _SKIPPED_DIRS
                            and not os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))):
                        pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    stat = entry.stat()
                    found[entry.path] = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                continue   # removed while we looked
    return found


def _changed_file(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> str:
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) != after.get(path):
            return os.path.relpath(path)
    return "a file"


class _Reloader:
    """Supervisor: runs the server as a child process, restarts it when sources change."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.root = os.getcwd()
        self.env = {**os.environ, _RELOADER_ENV: "1"}
        self.child: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        """Watch until SIGINT/SIGTERM; the exit status for the process."""
        flag = _StopFlag()
        with _StopOnSignals(flag):
            try:
                return self._watch(flag)
            except KeyboardInterrupt:
                return 0
            finally:
                self._stop_child()

    def _watch(self, flag: _StopFlag) -> int:
        import subprocess
        import time
        snapshot = _source_snapshot(self.root)
        _reload_log.info("Watching %d Python files under %s for changes", len(snapshot), self.root)
        self.child = subprocess.Popen(self.command, env=self.env)
        restarted = reported = False
        while not flag.stop:
            time.sleep(_RELOAD_POLL)
            if flag.stop:
                break   # Ctrl-C reaches the child too: its exit is no news then
            status = self.child.poll()
            if status is not None and not reported:
                if not restarted and status != 0:
                    return status if status > 0 else 1   # it never started: as without --reload
                _reload_log.warning("The server exited with status %s; waiting for a change",
                                    status)
                reported = True
            current = _source_snapshot(self.root)
            if current != snapshot:
                _reload_log.info("%s changed, restarting", _changed_file(snapshot, current))
                snapshot, restarted, reported = current, True, False
                self._stop_child()
                self.child = subprocess.Popen(self.command, env=self.env)
        return 0

    def _stop_child(self) -> None:
        import subprocess
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()   # the child's serve() treats SIGTERM as Ctrl-C: a clean shutdown
        try:
            child.wait(_CHILD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _this_process_command() -> list[str]:
    """The command line that started this process (interpreter options included)."""
    return [sys.executable, *sys.orig_argv[1:]]


def serve(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 8000, *,
          server: str = "wsgiref", threads: int = 8, reload: bool = False,
          header_timeout: float = _HEADER_TIMEOUT, keepalive_timeout: float = _KEEPALIVE_TIMEOUT,
          max_connections: int = _MAX_CONNECTIONS, max_request_line: int = _MAX_REQUEST_LINE,
          max_header_bytes: int = _MAX_HEADER_BYTES,
          max_header_fields: int = _MAX_HEADER_FIELDS) -> None:
    """Serve `app` until Ctrl-C or SIGTERM, then shut down cleanly and return.

    `reload=True` makes this process a supervisor that runs the same command line in a
    child process and restarts it whenever a .py file under the current directory changes.
    The bounds are make_server()'s.
    """
    _ensure_console_logging()
    if reload and not _is_reloader_child():
        _check_server_installed(server)   # fail here, not in every restarted child
        status = _Reloader(_this_process_command()).run()
        if status:
            raise SystemExit(status)
        return
    httpd = make_server(app, host, port, server=server, threads=threads,
                        header_timeout=header_timeout, keepalive_timeout=keepalive_timeout,
                        max_connections=max_connections, max_request_line=max_request_line,
                        max_header_bytes=max_header_bytes, max_header_fields=max_header_fields)
    print(f"Serving on {httpd.url} ({server}, Ctrl-C to stop)", flush=True)
    _serve_until_stopped(httpd, watch_parent=reload)


# -- servers: the command line

_APP_TARGET = _lazy_regex(r"(?P<module>[^\W\d][\w.]*)(?::(?P<attr>[^\W\d][\w.]*)(?P<call>\(\))?)?")


class _AppLoadError(Exception):
    """The module:app target cannot be loaded; the message says why in one line."""


def _import_target_module(name: str) -> Any:
    import importlib
    import traceback
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)   # python -m does this; a console script does not
    try:
        return importlib.import_module(name)
    except ImportError as exc:   # the module, or something it imports, is missing
        raise _AppLoadError(f"cannot import module {name!r}: {exc}") from None
    except Exception:
        traceback.print_exc()   # an error in the user's code: the traceback is the help
        raise _AppLoadError(f"importing module {name!r} failed (traceback above)") from None


def _load_app(target: str) -> Callable[..., Any]:
    """Import `module:attribute`, or call `module:factory()`, and return the WSGI app."""
    import traceback
    match = _APP_TARGET.fullmatch(target)
    if match is None:
        raise _AppLoadError(f"{target!r} is not an app: write module:attribute or module:factory()")
    module_name, attribute = match["module"], match["attr"] or "app"
    app = _import_target_module(module_name)
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise _AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if match["call"]:
        if not callable(app):
            raise _AppLoadError(f"{module_name}:{attribute} is not callable, so not a factory")
        try:
            app = app()
        except Exception:
            traceback.print_exc()
            raise _AppLoadError(f"{target} raised an error (traceback above)") from None
    if not callable(app):
        raise _AppLoadError(f"{target} is a {type(app).__name__}, not a WSGI application")
    wsgi_app: Callable[..., Any] = app
    return wsgi_app


def _check_serves_asgi(app: Any, target: str) -> None:
    try:
        _asgi_app_to_serve(app)
    except TypeError:
        raise _AppLoadError(f"{target} is a WSGI application, not an App: uvicorn serves "
                            "ASGI applications") from None


def _module_invocation() -> list[str]:
    """How to run this file again: `-m package.name`, or its path when run as a script."""
    spec = globals().get("__spec__")
    return ["-m", spec.name] if spec is not None else [os.path.abspath(__file__)]


def _port_number(text: str) -> int:
    import argparse
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _thread_count(text: str) -> int:
    import argparse
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count (1 or more)")
    return int(text)


def _argument_parser() -> argparse.ArgumentParser:
    import argparse
    invocation = _module_invocation()
    parser = argparse.ArgumentParser(
        prog="python " + " ".join(invocation),
        description="Serve a WSGI application until Ctrl-C or SIGTERM.")
    parser.add_argument("app", help="module:attribute or module:factory() (attribute defaults "
                                    "to 'app'); the current directory is importable")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port_number, default=8000,
                        help="port to bind, 0 for any free port (default 8000)")
    parser.add_argument("--server", choices=_SERVER_CHOICES, default="wsgiref",
                        help="wsgiref: threaded standard library server (default); "
                             "waitress: needs pip install waitress; uvicorn: serves the "
                             "App's app.asgi, needs pip install uvicorn")
    parser.add_argument("--threads", type=_thread_count, default=8,
                        help="worker threads for waitress, or for sync views under uvicorn "
                             "(default 8)")
    parser.add_argument("--reload", action="store_true",
                        help="restart when a .py file under the current directory changes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m microhandler module:app [options]`; the process exit status."""
    args = _argument_parser().parse_args(argv)
    _ensure_console_logging()
    try:
        if args.reload and not _is_reloader_child():
            _check_server_installed(args.server)
            command = (_this_process_command() if argv is None
                       else [sys.executable, *_module_invocation(), *argv])
            return _Reloader(command).run()
        app = _load_app(args.app)
        if args.server == "uvicorn":
            _check_serves_asgi(app, args.app)
        serve(app, args.host, args.port, server=args.server, threads=args.threads,
              reload=args.reload)
    except (_AppLoadError, _ServerNotInstalled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:   # the address is in use, not ours, or does not resolve
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
