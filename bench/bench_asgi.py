"""Request cost of microhandler's `app.asgi` next to raw ASGI, Starlette, Falcon and Django.

Every framework serves the same small scenarios and is called in-process the way an ASGI
server calls it, in one event loop: a fresh scope per call, `await app(scope, receive,
send)`, the body delivered by `receive()`, and `receive()` answering `http.disconnect` once
the response is complete (as uvicorn does, so a framework that listens for a disconnect
gets its answer and stops listening). Each cell is the median of several repeats, the
frameworks take turns inside every repeat, and every app's answer is checked once before
timing. Times are reported as a ratio to a hand-written raw ASGI function (the floor) and,
for microhandler, to the faster of Starlette and Falcon.

    python bench/bench_asgi.py                 # about 30 s
    python bench/bench_asgi.py --quick         # a few seconds: same cells, fewer calls
    python bench/bench_asgi.py --only microhandler,starlette --scenarios hello,json
    python bench/bench_asgi.py --profile       # cProfile of microhandler's ASGI hello

microhandler may be unfinished while this runs: a build or check failure turns its cells
into "n/a (...)" with the traceback on stderr, and the exit status into 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # microhandler.py lives at the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_frameworks import (  # noqa: E402 (after the path set-up)
    COOKIE_HEADER,
    JSON_BODY,
    JSON_DOC,
    QUERY_BODY,
    Cell,
    CheckFailed,
    _cpu_model,
    calibrate,
    fmt_cell,
)

FRAMEWORKS = ["raw", "microhandler", "starlette", "falcon", "django"]
PEERS = ["starlette", "falcon"]
PEER_GOAL = 0.85  # issue 15: microhandler's time at most 0.85 times the best of them, in every row

MIDDLEWARE_IDIOMS = {
    "raw": "5 pass-through ASGI wrappers that also wrap send",
    "microhandler": "App(middleware=[mw] * 5), mw an async_capable closure factory",
    "starlette": "5 pure ASGI middleware classes wrapping send (its fastest kind)",
    "falcon": "5 objects with async process_request/process_response",
    "django": "5 async-only classes in MIDDLEWARE (async_capable, sync_capable = False)",
}
SYNC_IDIOMS = {
    "raw": "asyncio.to_thread(fn)",
    "microhandler": "a plain def view (the loop's thread pool)",
    "starlette": "a plain def endpoint (anyio's thread pool)",
    "falcon": "falcon.util.wrap_sync_to_async(on_get, threadsafe=True)",
    "django": "a plain def view (asgiref's sync_to_async, thread-sensitive)",
}

# ----------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """One row of the table: what is requested and what must come back."""

    key: str
    method: str = "GET"
    path: str = "/hello"
    query: str = ""
    body: bytes | None = None
    content_type: str = ""
    cookie: str = ""
    routes: int = 0
    expected: bytes = b"Hello, World!"

    def check_body(self, body: bytes) -> bool:
        if self.key == "json":
            return json.loads(body) == JSON_DOC
        return body == self.expected


SCENARIOS = [
    Scenario("hello"),
    Scenario("param", path="/r99/42", routes=100, expected=b"id=42"),
    Scenario("json", method="POST", path="/echo", body=JSON_BODY,
             content_type="application/json", expected=JSON_BODY),
    Scenario("query", path="/q", query="a=1&b=2&c=3&c=4", cookie=COOKIE_HEADER,
             expected=QUERY_BODY),
    Scenario("middleware"),
    Scenario("sync"),
]
ROW_LABELS = {
    "hello": "hello", "param": "param (last of 100)", "json": "json echo 1 KB",
    "query": "query + 5 cookies", "middleware": "middleware x5", "sync": "sync view",
}


def base_scope(sc: Scenario) -> dict:
    """The scope a server would build for this request."""
    headers = [(b"host", b"localhost"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")]
    if sc.body is not None:
        headers += [(b"content-type", sc.content_type.encode()),
                    (b"content-length", str(len(sc.body)).encode())]
    if sc.cookie:
        headers.append((b"cookie", sc.cookie.encode()))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": sc.method, "scheme": "http", "path": sc.path,
        "raw_path": sc.path.encode(), "query_string": sc.query.encode(), "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("localhost", 80),
    }


# ----------------------------------------------------------------------- the server side

DISCONNECT = {"type": "http.disconnect"}


class Cycle:
    """One request/response cycle as a server runs it: receive() gives the body, then
    waits and says http.disconnect once the response is complete (as uvicorn does)."""

    __slots__ = ("body_message", "chunks", "complete", "status", "waiter")

    def __init__(self, body_message: dict, record: bool = False) -> None:
        self.body_message: dict | None = body_message
        self.complete = False
        self.waiter: asyncio.Future | None = None
        self.status = 0
        self.chunks: list[bytes] | None = [] if record else None

    async def receive(self) -> dict:
        message = self.body_message
        if message is not None:
            self.body_message = None
            return message
        if not self.complete:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return DISCONNECT

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body":
            if self.chunks is not None:
                self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                waiter = self.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)


def body_message(sc: Scenario) -> dict:
    return {"type": "http.request", "body": sc.body or b"", "more_body": False}


async def call_once(app, sc: Scenario) -> tuple[int, bytes]:
    cycle = Cycle(body_message(sc), record=True)
    await app(dict(base_scope(sc)), cycle.receive, cycle.send)
    assert cycle.chunks is not None
    return cycle.status, b"".join(cycle.chunks)


def make_runner(app, sc: Scenario, loop: asyncio.AbstractEventLoop) -> Callable[[int], float]:
    """A function that makes n calls the way a server does and returns the seconds taken."""
    scope = base_scope(sc)
    message = body_message(sc)
    perf_counter = time.perf_counter

    async def batch(n: int) -> float:
        copy = scope.copy
        t0 = perf_counter()
        for _ in range(n):
            cycle = Cycle(message)
            await app(copy(), cycle.receive, cycle.send)
        return perf_counter() - t0

    def run(n: int) -> float:
        return loop.run_until_complete(batch(n))
    return run


# ------------------------------------------------------------------------------ raw ASGI
# The floor: what a careful hand-written ASGI function costs for the same work.

TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


async def _raw_reply(send, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _raw_not_found(send):
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"Not Found"})


async def raw_hello(scope, receive, send):
    if scope["path"] == "/hello" and scope["method"] == "GET":
        return await _raw_reply(send, b"Hello, World!")
    return await _raw_not_found(send)


def _hello_text() -> bytes:
    return b"Hello, World!"


async def _raw_body(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def build_raw(sc: Scenario):
    if sc.key == "hello":
        return raw_hello
    if sc.key == "param":
        prefixes = {f"r{i}" for i in range(sc.routes)}

        async def param(scope, receive, send):
            parts = scope["path"].split("/")
            if len(parts) == 3 and parts[1] in prefixes and parts[2].isdigit():
                return await _raw_reply(send, f"id={int(parts[2]):d}".encode())
            return await _raw_not_found(send)
        return param
    if sc.key == "json":
        async def echo(scope, receive, send):
            doc = json.loads(await _raw_body(receive))
            await _raw_reply(send, json.dumps(doc).encode(), b"application/json")
        return echo
    if sc.key == "query":
        async def query(scope, receive, send):
            args = parse_qs(scope["query_string"].decode("latin-1"))
            cookies = {}
            for name, value in scope["headers"]:
                if name == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        key, _, val = part.strip().partition("=")
                        cookies[key] = val
            text = f"a={args['a'][-1]} c={','.join(args['c'])} session={cookies['session']}"
            await _raw_reply(send, text.encode())
        return query
    if sc.key == "middleware":
        app = raw_hello
        for _ in range(5):
            app = _raw_wrap(app)
        return app
    if sc.key == "sync":
        async def sync(scope, receive, send):
            await _raw_reply(send, await asyncio.to_thread(_hello_text))
        return sync
    raise ValueError(sc.key)


def _raw_wrap(inner):
    async def middleware(scope, receive, send):
        async def seen(message):
            await send(message)
        await inner(scope, receive, seen)
    return middleware


# -------------------------------------------------------------------------- microhandler

def build_microhandler(sc: Scenario):
    import microhandler as mh

    app = mh.App(middleware=[mh_passthrough] * 5 if sc.key == "middleware" else ())
    if sc.key in ("hello", "middleware"):
        @app.route("/hello")
        async def hello(request):
            return "Hello, World!"
    elif sc.key == "param":
        async def item(request, id):
            return f"id={id:d}"
        for i in range(sc.routes):
            app.add_route(f"/r{i}/<int:id>", item)
    elif sc.key == "json":
        @app.route("/echo", methods=["POST"])
        async def echo(request):
            return request.json
    elif sc.key == "query":
        @app.route("/q")
        async def query(request):
            c = ",".join(request.GET.getlist("c"))
            return f"a={request.GET['a']} c={c} session={request.COOKIES['session']}"
    elif sc.key == "sync":
        @app.route("/hello")
        def sync_hello(request):
            return "Hello, World!"
    return app.asgi


def mh_passthrough(get_response):
    async def handler(request):
        return await get_response(request)
    return handler


mh_passthrough.async_capable = True
mh_passthrough.sync_capable = False


# ----------------------------------------------------------------------------- Starlette

def build_starlette(sc: Scenario):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def hello(request):
        return PlainTextResponse("Hello, World!")

    async def item(request):
        return PlainTextResponse(f"id={request.path_params['id']:d}")

    async def echo(request):
        return JSONResponse(await request.json())

    async def query(request):
        c = ",".join(request.query_params.getlist("c"))
        return PlainTextResponse(
            f"a={request.query_params['a']} c={c} session={request.cookies['session']}")

    def sync_hello(request):
        return PlainTextResponse("Hello, World!")

    routes = {
        "hello": [Route("/hello", hello)], "middleware": [Route("/hello", hello)],
        "param": [Route(f"/r{i}/{{id:int}}", item) for i in range(sc.routes)],
        "json": [Route("/echo", echo, methods=["POST"])], "query": [Route("/q", query)],
        "sync": [Route("/hello", sync_hello)],
    }[sc.key]
    middleware = [Middleware(StarlettePassthrough)] * 5 if sc.key == "middleware" else []
    return Starlette(routes=routes, middleware=middleware)


class StarlettePassthrough:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def seen(message):
            await send(message)
        await self.app(scope, receive, seen)


# -------------------------------------------------------------------------------- Falcon

def build_falcon(sc: Scenario):
    import falcon
    import falcon.asgi
    from falcon.util import wrap_sync_to_async

    class Hello:
        async def on_get(self, req, resp):
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = "Hello, World!"

    class Item:
        async def on_get(self, req, resp, id):
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"id={id:d}"

    class Echo:
        async def on_post(self, req, resp):
            resp.media = await req.get_media()

    class Query:
        async def on_get(self, req, resp):
            c = ",".join(req.get_param_as_list("c"))
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"a={req.get_param('a')} c={c} session={req.cookies['session']}"

    def sync_on_get(req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Hello, World!"

    class SyncHello:
        on_get = staticmethod(wrap_sync_to_async(sync_on_get, threadsafe=True))

    middleware = [FalconPassthrough() for _ in range(5)] if sc.key == "middleware" else []
    app = falcon.asgi.App(middleware=middleware)
    if sc.key in ("hello", "middleware"):
        app.add_route("/hello", Hello())
    elif sc.key == "param":
        item = Item()
        for i in range(sc.routes):
            app.add_route(f"/r{i}/{{id:int}}", item)
    elif sc.key == "json":
        app.add_route("/echo", Echo())
    elif sc.key == "query":
        app.add_route("/q", Query())
    elif sc.key == "sync":
        app.add_route("/hello", SyncHello())
    return app


class FalconPassthrough:
    async def process_request(self, req, resp):
        pass

    async def process_response(self, req, resp, resource, req_succeeded):
        pass


# -------------------------------------------------------------------------------- Django

class DjangoPassthrough:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        from asgiref.sync import markcoroutinefunction
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        return await self.get_response(request)


def _django_setup() -> None:
    from django.conf import settings

    if settings.configured:
        return
    import django

    settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="bench-only",
                       ROOT_URLCONF=types.ModuleType("bench_asgi_urls_empty"), MIDDLEWARE=[],
                       INSTALLED_APPS=[], DATABASES={})
    settings.ROOT_URLCONF.urlpatterns = []
    django.setup(set_prefix=False)


def build_django(sc: Scenario):
    _django_setup()
    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler, ASGIRequest
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    text = "text/plain; charset=utf-8"

    async def hello(request):
        return HttpResponse("Hello, World!", content_type=text)

    async def item(request, id):
        return HttpResponse(f"id={id:d}", content_type=text)

    async def echo(request):
        return JsonResponse(json.loads(request.body))

    async def query(request):
        c = ",".join(request.GET.getlist("c"))
        return HttpResponse(f"a={request.GET['a']} c={c} session={request.COOKIES['session']}",
                            content_type=text)

    def sync_hello(request):
        return HttpResponse("Hello, World!", content_type=text)

    patterns = {
        "hello": [path("hello", hello)], "middleware": [path("hello", hello)],
        "param": [path(f"r{i}/<int:id>", item) for i in range(sc.routes)],
        "json": [path("echo", echo)], "query": [path("q", query)],
        "sync": [path("hello", sync_hello)],
    }[sc.key]
    urlconf = types.ModuleType(f"bench_asgi_urls_{sc.key}")
    urlconf.urlpatterns = patterns

    # As in bench_frameworks.py: each handler's requests carry their own urlconf, so one
    # process holds every scenario's URLconf while the scenarios run interleaved.
    class Request(ASGIRequest):
        pass
    Request.urlconf = urlconf

    class Handler(ASGIHandler):
        request_class = Request

    if sc.key == "middleware":   # read once, when the handler is built
        settings.MIDDLEWARE = [f"{__name__}.DjangoPassthrough"] * 5
    try:
        return Handler()
    finally:
        settings.MIDDLEWARE = []


BUILDERS: dict[str, Callable[[Scenario], Callable]] = {
    "raw": build_raw, "microhandler": build_microhandler, "starlette": build_starlette,
    "falcon": build_falcon, "django": build_django,
}

# --------------------------------------------------------------------------------- cells


def prepare_cell(fw: str, sc: Scenario, loop: asyncio.AbstractEventLoop) -> Cell:
    """Build the app, check its answer once, and return a ready-to-time cell; a peer that
    fails is a bug here (it raises), a microhandler failure becomes an error cell."""
    try:
        app = BUILDERS[fw](sc)
        status, body = loop.run_until_complete(call_once(app, sc))
        if status != 200 or not sc.check_body(body):
            raise CheckFailed(f"{fw} {sc.key}: got {status!r} {body[:300]!r}")
        return Cell(run=make_runner(app, sc, loop))
    except Exception as exc:
        if fw != "microhandler":
            raise
        print(f"\n--- microhandler, scenario {sc.key}: failed ---", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return Cell(error=f"{type(exc).__name__}: {exc}"[:60])


def measure(cells: dict[tuple[str, str], Cell], repeats: int, batch_s: float) -> None:
    """Calibrate every cell, then time them in rounds, rotating the order each round."""
    live = [key for key, cell in cells.items() if not cell.error]
    for key in live:
        cells[key].n = calibrate(cells[key].run, batch_s)
        cells[key].times = []
    gc.collect()
    gc.freeze()   # the apps built so far stay out of the collector's sight, as when preloaded
    for r in range(repeats):
        shift = (r * max(1, len(live) // repeats)) % max(1, len(live))
        for key in live[shift:] + live[:shift]:
            cell = cells[key]
            gc.collect()
            try:
                cell.times.append(cell.run(cell.n))
            except Exception as exc:
                if key[0] != "microhandler":
                    raise
                traceback.print_exc(file=sys.stderr)
                cell.error = f"{type(exc).__name__}: {exc}"[:60]
                live.remove(key)


# ------------------------------------------------------------------------------ printing

def version_of(fw: str) -> str:
    if fw == "raw":
        return "-"
    if fw == "microhandler":
        try:
            import microhandler
            return getattr(microhandler, "__version__", "?")
        except Exception:
            return "n/a"
    return metadata.version({"starlette": "starlette", "falcon": "falcon",
                             "django": "Django"}[fw])


def print_header(args, frameworks: list[str]) -> None:
    print(f"# microhandler benchmark: ASGI ({'quick' if args.quick else 'default'} mode)")
    print()
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- python: {platform.python_implementation()} {sys.version.split()[0]}")
    print(f"- machine: {platform.platform()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {_cpu_model()}")
    print(f"- versions: {', '.join(f'{fw} {version_of(fw)}' for fw in frameworks)}")
    print(f"- cells: median of {args.repeats} repeats, each ~{args.batch * 1000:.0f} ms of "
          "calls; frameworks interleaved within each repeat; one asyncio event loop")
    print()


def print_table(scenarios, frameworks, cells) -> None:
    peers = [fw for fw in PEERS if fw in frameworks]
    compare = "microhandler" in frameworks and peers
    head = ["scenario", *frameworks] + ([f"mh ÷ best of {'/'.join(peers)}", "goal"]
                                        if compare else [])
    rows = []
    for sc in scenarios:
        raw = cells[("raw", sc.key)]
        row = [ROW_LABELS[sc.key]] + [fmt_cell(cells[(fw, sc.key)], raw) for fw in frameworks]
        if compare:
            best = min((cells[(fw, sc.key)].usec for fw in peers
                        if cells[(fw, sc.key)].usec), default=None)
            mh = cells[("microhandler", sc.key)].usec
            ratio = mh / best if mh and best else None
            row += [f"{ratio:.2f}" if ratio else "n/a", "n/a" if ratio is None else
                    f"≤{PEER_GOAL}: " + ("yes" if ratio <= PEER_GOAL else "**NO**")]
        rows.append(row)
    for row in [head, ["---"] * len(head), *rows]:
        print("| " + " | ".join(row) + " |")
    print()
    print("Cells: time per request as a ratio to raw ASGI in the same row (µs per request). "
          "Every call includes the harness: a scope copy, a receive/send pair, the "
          "http.disconnect a listener gets once the response is complete.")
    print("Middleware: " + "; ".join(f"{fw}: {MIDDLEWARE_IDIOMS[fw]}" for fw in frameworks)
          + ".")
    print("Sync view: " + "; ".join(f"{fw}: {SYNC_IDIOMS[fw]}" for fw in frameworks) + ".")


# ------------------------------------------------------------------------------- profile

def profile_hello(requests: int, top: int) -> None:
    """cProfile over `requests` calls of microhandler's ASGI hello: the top by own time."""
    import cProfile
    import pstats
    loop = asyncio.new_event_loop()
    sc = SCENARIOS[0]
    run = make_runner(build_microhandler(sc), sc, loop)
    run(1000)   # warm: the chain is built, the routes compiled
    profiler = cProfile.Profile()
    profiler.enable()
    run(requests)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"# cProfile: microhandler app.asgi, hello, {requests} requests "
          f"(harness included), top {top} by own time\n")
    print("| own s | calls | own µs/request | cumulative s | function |")
    print("| --- | --- | --- | --- | --- |")
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    for (filename, line, name), (_, calls, own, cumulative, _) in entries:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(f"| {own:.3f} | {calls} | {own / requests * 1e6:.2f} | {cumulative:.3f} | "
              f"{name} ({where}) |")
    own_file = [(key, value) for key, value in stats.stats.items()
                if Path(key[0]).name == "microhandler.py"]
    print("\nmicrohandler.py's functions by cumulative time (what each step costs, callees "
          "included):\n")
    print("| cumulative µs/request | own µs/request | calls/request | function |")
    print("| --- | --- | --- | --- |")
    for (_file, line, name), (_, calls, own, cumulative, _) in sorted(
            own_file, key=lambda item: item[1][3], reverse=True)[:top]:
        print(f"| {cumulative / requests * 1e6:.2f} | {own / requests * 1e6:.2f} | "
              f"{calls / requests:.2f} | {name} (microhandler.py:{line}) |")
    total = sum(entry[2] for entry in stats.stats.values())
    print(f"\nTotal own time: {total:.3f} s, {total / requests * 1e6:.1f} µs per request "
          "(under the profiler, so slower than the table).")
    loop.close()


# ---------------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, shorter")
    p.add_argument("--only", default="", help="comma-separated frameworks (raw is always in)")
    p.add_argument("--scenarios", default="",
                   help="comma-separated rows: " + ",".join(s.key for s in SCENARIOS))
    p.add_argument("--repeats", type=int, help="repeats per cell (default 9, quick 5)")
    p.add_argument("--batch", type=float, help="seconds per repeat (default 0.08, quick 0.02)")
    p.add_argument("--profile", type=int, nargs="?", const=20_000, default=0, metavar="N",
                   help="instead of the table: cProfile N requests of microhandler's hello")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 9)
    args.batch = args.batch or (0.02 if args.quick else 0.08)
    return args


def select(args) -> tuple[list[str], list[Scenario]]:
    frameworks = FRAMEWORKS
    if args.only:
        wanted = {name.strip().lower() for name in args.only.split(",")} | {"raw"}
        unknown = wanted - set(FRAMEWORKS)
        if unknown:
            sys.exit(f"unknown framework(s): {', '.join(sorted(unknown))}")
        frameworks = [fw for fw in FRAMEWORKS if fw in wanted]
    scenarios = SCENARIOS
    if args.scenarios:
        wanted = {name.strip() for name in args.scenarios.split(",")}
        unknown = wanted - {s.key for s in SCENARIOS}
        if unknown:
            sys.exit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = [s for s in SCENARIOS if s.key in wanted]
    return frameworks, scenarios


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.dont_write_bytecode = True
    if args.profile:
        profile_hello(args.profile, 25)
        return 0
    frameworks, scenarios = select(args)
    print_header(args, frameworks)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    cells = {(fw, sc.key): prepare_cell(fw, sc, loop) for sc in scenarios for fw in frameworks}
    measure(cells, args.repeats, args.batch)
    print_table(scenarios, frameworks, cells)
    timed = [(cell.spread, key) for key, cell in cells.items() if cell.times]
    if timed:
        spread, (fw, row) = max(timed)
        print(f"Largest spread between the repeats of one cell (max/min - 1): {spread:.0%} "
              f"({fw}, {row}).")
    failed = [key for key, cell in cells.items() if cell.error]
    if failed:
        print(f"\nFAILED cells: {', '.join('/'.join(k) for k in failed)} (tracebacks on stderr)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
