"""What the session, CSRF and GZip layers cost per request, as a ratio to the same app
without them.

Each scenario is one request served twice, in-process and the way a WSGI server calls an
app (a fresh environ, `app(environ, start_response)`, the body consumed, `close()`): by an
App with the battery and by the same App without it. The two take turns inside every
repeat, and each figure is the median of the repeats, so drift hits both alike.

    python bench/bench_batteries.py            # about 20 s
    python bench/bench_batteries.py --quick    # about 5 s
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # microhandler.py lives at the repository root

from microhandler import (  # noqa: E402
    App,
    Client,
    CsrfViewMiddleware,
    GZipMiddleware,
    HttpResponse,
    SessionMiddleware,
    csrf_token,
)

SECRET = "bench secret key"
# A 2 KB page: the size of a small real page, above GZip's 200-byte threshold.
PAGE = "<!DOCTYPE html><title>bench</title>" + "<p>A line of a small page.</p>\n" * 64


def page(request):
    return HttpResponse(PAGE)


def read_session(request):
    session = getattr(request, "session", None)
    return HttpResponse(PAGE if session is None else PAGE + str(session.get("n", 0)))


def write_session(request):
    session = getattr(request, "session", None)
    if session is not None:
        session["n"] = session.get("n", 0) + 1
    return HttpResponse(PAGE)


def form(request):
    token = csrf_token(request) if hasattr(request, "_csrf_middleware") else ""
    return HttpResponse(PAGE + f'<input name="csrfmiddlewaretoken" value="{token}">')


def submit(request):
    return HttpResponse(PAGE + request.POST["note"])


def build(middleware: list) -> App:
    app = App(middleware=middleware, secret_key=SECRET)
    for path, view, methods in (("/page", page, None), ("/read", read_session, None),
                                ("/write", write_session, None), ("/form", form, None),
                                ("/submit", submit, ["POST"])):
        app.add_route(path, view, methods)
    return app


def environ_for(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> dict:
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "bench", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
    }
    if body:
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    environ.update(("HTTP_" + name.upper().replace("-", "_"), value)
                   for name, value in headers.items())
    return environ


def caller(app: App, environ: dict, body: bytes = b"") -> Callable[[int], float]:
    """A function serving `count` requests and returning the seconds it took."""
    def start_response(status, headers, exc_info=None):
        if not status.startswith(("200", "302")):
            raise RuntimeError(f"{status} for {environ['PATH_INFO']}")
        return lambda data: None

    def run(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            call_environ = environ.copy()
            call_environ["wsgi.input"] = io.BytesIO(body)
            result = app(call_environ, start_response)
            for _chunk in result:
                pass
            if hasattr(result, "close"):   # PEP 3333: close() when the iterable has one
                result.close()
        return time.perf_counter() - started
    return run


def cookies_from(app: App, path: str) -> str:
    """The Cookie header a browser would send after one visit to `path`."""
    client = Client(app)
    client.get(path)
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def scenarios() -> list[tuple[str, Callable[[int], float], Callable[[int], float]]]:
    """(name, the app without the battery, the app with it) for each scenario."""
    plain = build([])
    session = build([SessionMiddleware])
    csrf = build([CsrfViewMiddleware])
    gzip = build([GZipMiddleware])
    every = build([GZipMiddleware, SessionMiddleware, CsrfViewMiddleware])
    session_cookie = cookies_from(session, "/write")
    client = Client(csrf)
    token = client.get("/form").text.rsplit('value="', 1)[1].split('"', 1)[0]
    csrf_cookie = f"csrftoken={client.cookies['csrftoken']}"
    body = urlencode({"note": "hello", "csrfmiddlewaretoken": token}).encode()
    gzip_headers = {"Accept-Encoding": "gzip, deflate, br"}
    get = environ_for

    def pair(name, layered, environ, body=b""):
        return (name, caller(plain, environ, body), caller(layered, environ, body))

    return [
        pair("session, not used", session, get("GET", "/page", {})),
        pair("session, read", session, get("GET", "/read", {"Cookie": session_cookie})),
        pair("session, written", session, get("GET", "/write", {"Cookie": session_cookie})),
        pair("csrf, GET (no token)", csrf, get("GET", "/page", {})),
        pair("csrf, GET form with token", csrf, get("GET", "/form", {"Cookie": csrf_cookie})),
        pair("csrf, POST checked", csrf, get("POST", "/submit", {
            "Cookie": csrf_cookie, "Origin": "http://bench"}, body), body),
        pair("gzip, 2 KB page", gzip, get("GET", "/page", gzip_headers)),
        pair("gzip, client without gzip", gzip, get("GET", "/page", {})),
        pair("all three, POST", every, get("POST", "/submit", {
            "Cookie": f"{csrf_cookie}; {session_cookie}", "Origin": "http://bench",
            **gzip_headers}, body), body),
    ]


def calibrate(run: Callable[[int], float], batch_s: float) -> int:
    count = 16
    while run(count) < batch_s / 4 and count < 1 << 20:
        count *= 2
    return max(16, int(count * batch_s / max(run(count), 1e-9)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter batches")
    options = parser.parse_args(argv)
    repeats, batch_s = (3, 0.03) if options.quick else (9, 0.08)
    print(f"Python {sys.version.split()[0]}; median of {repeats} repeats; "
          "microseconds per request\n")
    print(f"{'scenario':<28} {'without':>9} {'with':>9} {'ratio':>7}")
    for name, without, layered in scenarios():
        count = calibrate(without, batch_s)
        times: dict[str, list[float]] = {"without": [], "with": []}
        for repeat in range(repeats):
            order = [("without", without), ("with", layered)]
            for label, run in order if repeat % 2 == 0 else order[::-1]:
                times[label].append(run(count) / count * 1e6)
        base, cost = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"{name:<28} {base:9.1f} {cost:9.1f} {cost / base:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
