"""Request cost of microhandler next to raw WSGI, Bottle, Falcon, Flask and Django.

Every framework serves the same small scenarios and is called in-process the way a WSGI
server calls it: a fresh environ per call, `app(environ, start_response)`, the body iterable
consumed, `close()` called. Each cell is the median of several repeats, and the frameworks
take turns inside every repeat, so that drift (turbo, a noisy neighbour) hits all of them
alike. Times are reported as a ratio to a hand-written raw WSGI function: the floor.

    python bench/bench_frameworks.py            # default: about 1 minute
    python bench/bench_frameworks.py --quick    # about 10 s: same cells, fewer calls
    python bench/bench_frameworks.py --only microhandler,flask --scenarios hello,json

microhandler may be unfinished while this runs: an import, build or check failure turns its
cells into "n/a (...)" with the traceback on stderr, and the exit status into 1.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import json
import os
import platform
import site
import statistics
import subprocess
import sys
import tempfile
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

FRAMEWORKS = ["raw", "microhandler", "bottle", "falcon", "flask", "django"]

# The modules a fresh interpreter needs before it can build and serve an app.
IMPORTS = {
    "microhandler": "microhandler",
    "bottle": "bottle",
    "falcon": "falcon",
    "flask": "flask",
    "django": "django.core.wsgi, django.http, django.urls",
}

# Targets for microhandler, as a ratio to raw WSGI (import: milliseconds).
TARGETS = {
    "hello": 3.0, "param": 3.5, "json": 1.2, "query": 2.5, "middleware": 3.0,
    "scaling": 1.1, "import": 15.0,
}

# What each framework's "middleware" is in the middleware scenario.
MIDDLEWARE_IDIOMS = {
    "raw": "5 pass-through WSGI wrappers that also wrap start_response",
    "microhandler": "App(middleware=[mw] * 5), mw a closure factory",
    "bottle": "5 plugins (pass-through callback decorators)",
    "falcon": "5 objects with process_request/process_response",
    "flask": "5 before_request + 5 after_request hooks (not WSGI wrapping)",
    "django": "5 classes in MIDDLEWARE (__init__(get_response) / __call__)",
}

# ----------------------------------------------------------------------------- scenarios

JSON_DOC = {
    "id": 12345,
    "name": "benchmark document",
    "active": True,
    "ratio": 0.75,
    "tags": [f"tag-{i}" for i in range(12)],
    "items": [{"sku": f"SKU-{i:05d}", "qty": i, "price": i * 1.25} for i in range(12)],
    "note": "x" * 120,
}
JSON_BODY = json.dumps(JSON_DOC).encode()
COOKIES = {"session": "3f9a1c2b7d", "theme": "dark", "lang": "en", "csrftoken": "a" * 32,
           "tracking": "abc-123-def"}
COOKIE_HEADER = "; ".join(f"{k}={v}" for k, v in COOKIES.items())
QUERY_BODY = b"a=1 c=3,4 session=3f9a1c2b7d"


@dataclass
class Scenario:
    """One row of the table: what is requested and what must come back."""

    key: str                 # row id; also the key of TARGETS for the plain rows
    kind: str                # which app the builders make: hello, param, json, query, middleware
    method: str = "GET"
    path: str = "/hello"
    query: str = ""
    body: bytes | None = None
    content_type: str = ""
    cookie: str = ""
    routes: int = 0          # param and scaling: how many template routes are registered
    expected: bytes = b"Hello, World!"

    def check_body(self, body: bytes) -> bool:
        if self.kind == "json":
            return json.loads(body) == JSON_DOC
        return body == self.expected


def param_scenario(key: str, routes: int) -> Scenario:
    # The request hits the last registered route: the worst case for a linear scan.
    return Scenario(key, "param", path=f"/r{routes - 1}/42", routes=routes, expected=b"id=42")


SCENARIOS = [
    Scenario("hello", "hello"),
    param_scenario("param", 100),
    Scenario("json", "json", method="POST", path="/echo", body=JSON_BODY,
             content_type="application/json", expected=JSON_BODY),
    Scenario("query", "query", path="/q", query="a=1&b=2&c=3&c=4", cookie=COOKIE_HEADER,
             expected=QUERY_BODY),
    Scenario("middleware", "middleware"),
    param_scenario("routes10", 10),
    param_scenario("routes100", 100),
    param_scenario("routes1000", 1000),
]
ROW_LABELS = {
    "hello": "hello", "param": "param (last of 100)", "json": "json echo 1 KB",
    "query": "query+cookie", "middleware": "middleware x5", "routes10": "routes: last of 10",
    "routes100": "routes: last of 100", "routes1000": "routes: last of 1000",
}


def base_environ(sc: Scenario) -> dict:
    """The environ a server would build for this request, minus the per-call input stream."""
    env = {
        "REQUEST_METHOD": sc.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": sc.path,
        "QUERY_STRING": sc.query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if sc.body is not None:
        env["CONTENT_TYPE"] = sc.content_type
        env["CONTENT_LENGTH"] = str(len(sc.body))
    if sc.cookie:
        env["HTTP_COOKIE"] = sc.cookie
    return env


# ------------------------------------------------------------------------------ raw WSGI
# The floor: what a careful hand-written WSGI function costs for the same work.

def _raw_reply(start_response, body: bytes, content_type: str = "text/plain; charset=utf-8"):
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(body)))])
    return [body]


def _raw_not_found(start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"Not Found"]


def raw_hello(environ, start_response):
    if environ["PATH_INFO"] == "/hello" and environ["REQUEST_METHOD"] == "GET":
        return _raw_reply(start_response, b"Hello, World!")
    return _raw_not_found(start_response)


def build_raw(sc: Scenario):
    if sc.kind == "hello":
        return raw_hello
    if sc.kind == "param":
        # A hand-written dispatcher would split the path and look the prefix up in a set.
        prefixes = {f"r{i}" for i in range(sc.routes)}

        def param(environ, start_response):
            parts = environ["PATH_INFO"].split("/")
            if len(parts) == 3 and parts[1] in prefixes and parts[2].isdigit():
                return _raw_reply(start_response, f"id={int(parts[2]):d}".encode())
            return _raw_not_found(start_response)
        return param
    if sc.kind == "json":
        def echo(environ, start_response):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            doc = json.loads(environ["wsgi.input"].read(length))
            return _raw_reply(start_response, json.dumps(doc).encode(), "application/json")
        return echo
    if sc.kind == "query":
        def query(environ, start_response):
            args = parse_qs(environ.get("QUERY_STRING", ""))
            cookies = {}
            for part in environ.get("HTTP_COOKIE", "").split(";"):
                name, _, value = part.strip().partition("=")
                cookies[name] = value
            text = f"a={args['a'][-1]} c={','.join(args['c'])} session={cookies['session']}"
            return _raw_reply(start_response, text.encode())
        return query
    if sc.kind == "middleware":
        app = raw_hello
        for _ in range(5):
            app = _raw_wrap(app)
        return app
    raise ValueError(sc.kind)


def _raw_wrap(inner):
    # Like the other frameworks' middleware, each layer gets to see the response too: a WSGI
    # middleware does that by wrapping start_response.
    def middleware(environ, start_response):
        def seen_response(status, headers, exc_info=None):
            return start_response(status, headers, exc_info)
        return inner(environ, seen_response)
    return middleware


# -------------------------------------------------------------------------- microhandler

def build_microhandler(sc: Scenario):
    import microhandler as mh

    app = mh.App(middleware=[mh_passthrough] * 5 if sc.kind == "middleware" else ())
    if sc.kind in ("hello", "middleware"):
        @app.route("/hello")
        def hello(request):
            return "Hello, World!"
    elif sc.kind == "param":
        def item(request, id):
            return f"id={id:d}"  # ':d' fails loudly if the converter gave a str
        for i in range(sc.routes):
            app.add_route(f"/r{i}/<int:id>", item)
    elif sc.kind == "json":
        @app.route("/echo", methods=["POST"])
        def echo(request):
            return request.json  # a dict: the framework turns it into a JsonResponse
    elif sc.kind == "query":
        @app.route("/q")
        def query(request):
            c = ",".join(request.GET.getlist("c"))
            return f"a={request.GET['a']} c={c} session={request.COOKIES['session']}"
    return app


def mh_passthrough(get_response):
    def handler(request):
        return get_response(request)
    return handler


# -------------------------------------------------------------------------------- Bottle

def build_bottle(sc: Scenario):
    import bottle

    app = bottle.Bottle()
    if sc.kind in ("hello", "middleware"):
        @app.get("/hello")
        def hello():
            bottle.response.content_type = "text/plain; charset=utf-8"
            return "Hello, World!"
        if sc.kind == "middleware":
            for _ in range(5):
                app.install(_bottle_plugin())
    elif sc.kind == "param":
        def item(id):
            return f"id={id:d}"
        for i in range(sc.routes):
            app.route(f"/r{i}/<id:int>", "GET", item)
    elif sc.kind == "json":
        @app.post("/echo")
        def echo():
            return bottle.request.json  # a dict: Bottle's JSON plugin serialises it
    elif sc.kind == "query":
        @app.get("/q")
        def query():
            req = bottle.request
            c = ",".join(req.query.getall("c"))
            return f"a={req.query.get('a')} c={c} session={req.get_cookie('session')}"
    return app


def _bottle_plugin():
    # A Bottle plugin may be a plain decorator; Bottle applies it once per route and caches.
    def plugin(callback):
        def wrapper(*args, **kwargs):
            return callback(*args, **kwargs)
        return wrapper
    return plugin


# -------------------------------------------------------------------------------- Falcon

def build_falcon(sc: Scenario):
    import falcon

    class Hello:
        def on_get(self, req, resp):
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = "Hello, World!"

    class Item:
        def on_get(self, req, resp, id):
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"id={id:d}"

    class Echo:
        def on_post(self, req, resp):
            resp.media = req.get_media()

    class Query:
        def on_get(self, req, resp):
            c = ",".join(req.get_param_as_list("c"))
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = f"a={req.get_param('a')} c={c} session={req.cookies['session']}"

    middleware = [FalconPassthrough() for _ in range(5)] if sc.kind == "middleware" else []
    app = falcon.App(middleware=middleware)
    if sc.kind in ("hello", "middleware"):
        app.add_route("/hello", Hello())
    elif sc.kind == "param":
        item = Item()
        for i in range(sc.routes):
            app.add_route(f"/r{i}/{{id:int}}", item)
    elif sc.kind == "json":
        app.add_route("/echo", Echo())
    elif sc.kind == "query":
        app.add_route("/q", Query())
    return app


class FalconPassthrough:
    def process_request(self, req, resp):
        pass

    def process_response(self, req, resp, resource, req_succeeded):
        pass


# --------------------------------------------------------------------------------- Flask

def build_flask(sc: Scenario):
    import flask

    app = flask.Flask(f"bench_{sc.key}")
    if sc.kind in ("hello", "middleware"):
        @app.get("/hello")
        def hello():
            return "Hello, World!"
        if sc.kind == "middleware":
            for _ in range(5):
                app.before_request(_flask_before)
                app.after_request(_flask_after)
    elif sc.kind == "param":
        def item(id):
            return f"id={id:d}"
        for i in range(sc.routes):
            app.add_url_rule(f"/r{i}/<int:id>", endpoint=f"r{i}", view_func=item)
    elif sc.kind == "json":
        @app.post("/echo")
        def echo():
            return flask.request.get_json()  # a dict: Flask jsonifies it
    elif sc.kind == "query":
        @app.get("/q")
        def query():
            req = flask.request
            c = ",".join(req.args.getlist("c"))
            return f"a={req.args['a']} c={c} session={req.cookies['session']}"
    return app


def _flask_before():
    return None  # None: go on to the view


def _flask_after(response):
    return response


# -------------------------------------------------------------------------------- Django

class DjangoPassthrough:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)


def _django_setup() -> None:
    from django.conf import settings

    if settings.configured:
        return
    import django

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="bench-only",
        ROOT_URLCONF=types.ModuleType("bench_urls_empty"),
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    settings.ROOT_URLCONF.urlpatterns = []
    django.setup(set_prefix=False)


def build_django(sc: Scenario):
    _django_setup()
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    def hello(request):
        return HttpResponse("Hello, World!", content_type="text/plain; charset=utf-8")

    def item(request, id):
        return HttpResponse(f"id={id:d}", content_type="text/plain; charset=utf-8")

    def echo(request):
        return JsonResponse(json.loads(request.body))

    def query(request):
        c = ",".join(request.GET.getlist("c"))
        text = f"a={request.GET['a']} c={c} session={request.COOKIES['session']}"
        return HttpResponse(text, content_type="text/plain; charset=utf-8")

    if sc.kind in ("hello", "middleware"):
        patterns = [path("hello", hello)]
    elif sc.kind == "param":
        patterns = [path(f"r{i}/<int:id>", item) for i in range(sc.routes)]
    elif sc.kind == "json":
        patterns = [path("echo", echo)]
    else:
        patterns = [path("q", query)]
    urlconf = types.ModuleType(f"bench_urls_{sc.key}")
    urlconf.urlpatterns = patterns

    # Settings are process-wide, but the scenarios run interleaved: each handler's requests
    # carry their own urlconf (Django's documented per-request `request.urlconf`, the hook
    # that middleware normally sets), so one process can hold every scenario's URLconf.
    class Request(WSGIRequest):
        pass
    Request.urlconf = urlconf

    class Handler(WSGIHandler):
        request_class = Request

    # The middleware list is read once, when the handler is built.
    if sc.kind == "middleware":
        settings.MIDDLEWARE = [f"{__name__}.DjangoPassthrough"] * 5
    try:
        return Handler()
    finally:
        settings.MIDDLEWARE = []


BUILDERS: dict[str, Callable[[Scenario], Callable]] = {
    "raw": build_raw,
    "microhandler": build_microhandler,
    "bottle": build_bottle,
    "falcon": build_falcon,
    "flask": build_flask,
    "django": build_django,
}

# ------------------------------------------------------------------------------- calling


def _write(data):  # the write() callable that start_response returns; unused by these apps
    pass


def call_once(app, env: dict) -> tuple[str, bytes]:
    """One full WSGI call that records the status and the body, for the correctness check."""
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append(status)
        return _write

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return (seen[-1] if seen else "(start_response not called)"), body


def make_runner(app, sc: Scenario) -> Callable[[int], float]:
    """A function that makes n calls the way a server does and returns the seconds taken."""
    base = base_environ(sc)
    body = sc.body
    sent = [None, None]

    def start_response(status, headers, exc_info=None):
        # A server keeps the status and headers to send them before the first chunk.
        sent[0] = status
        sent[1] = headers
        return _write

    perf_counter = time.perf_counter
    BytesIO = io.BytesIO

    # Two loops rather than one with a branch, so a request without a body pays nothing extra.
    if body is None:
        def run(n: int) -> float:
            copy = base.copy
            t0 = perf_counter()
            for _ in range(n):
                result = app(copy(), start_response)
                for _chunk in result:
                    pass
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return perf_counter() - t0
    else:
        def run(n: int) -> float:
            copy = base.copy
            t0 = perf_counter()
            for _ in range(n):
                env = copy()
                env["wsgi.input"] = BytesIO(body)
                result = app(env, start_response)
                for _chunk in result:
                    pass
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            return perf_counter() - t0
    return run


def calibrate(run: Callable[[int], float], batch_s: float) -> int:
    """The call count that makes one repeat last about batch_s seconds."""
    n = 1
    while True:
        took = run(n)
        if took >= batch_s / 5 or n >= 1_000_000:
            break
        n *= 4
    return max(1, round(n * batch_s / max(took, 1e-9)))


# --------------------------------------------------------------------------------- cells

@dataclass
class Cell:
    run: Callable[[int], float] | None = None
    n: int = 0
    times: list[float] | None = None
    error: str = ""

    @property
    def usec(self) -> float | None:
        if self.error or not self.times:
            return None
        return statistics.median(self.times) / self.n * 1e6

    @property
    def spread(self) -> float:
        return max(self.times) / min(self.times) - 1 if self.times else 0.0


class CheckFailed(Exception):
    pass


def prepare_cell(fw: str, sc: Scenario) -> Cell:
    """Build the app, check its answer once, and return a ready-to-time cell.

    A peer that fails is a bug in this benchmark: it raises. microhandler may be unfinished:
    its failure becomes an error cell, with the traceback on stderr."""
    try:
        app = BUILDERS[fw](sc)
        env = base_environ(sc)
        if sc.body is not None:
            env["wsgi.input"] = io.BytesIO(sc.body)
        status, body = call_once(app, env)
        if not status.startswith("200") or not sc.check_body(body):
            raise CheckFailed(f"{fw} {sc.key}: got {status!r} {body[:300]!r}")
        return Cell(run=make_runner(app, sc))
    except Exception as exc:
        if fw != "microhandler":
            raise
        print(f"\n--- microhandler, scenario {sc.key}: failed ---", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return Cell(error=f"{type(exc).__name__}: {exc}"[:60])


def measure(cells: dict[tuple[str, str], Cell], repeats: int, batch_s: float) -> None:
    """Calibrate every cell, then time them in rounds: each round visits every cell once.

    The order rotates from round to round, so no framework is always first after a
    gc.collect() or always last when the CPU has warmed up."""
    live = [key for key, cell in cells.items() if not cell.error]
    for key in live:
        cells[key].n = calibrate(cells[key].run, batch_s)
        cells[key].times = []
    # Move everything built so far (six frameworks, thousands of routes) out of the
    # collector's sight, as servers that preload an app do: otherwise every full collection,
    # automatic ones inside a timed batch included, scans all six frameworks' objects (tens of
    # ms) and lands on whichever cell happens to be running.
    gc.collect()
    gc.freeze()
    for r in range(repeats):
        shift = (r * max(1, len(live) // repeats)) % max(1, len(live))
        for key in live[shift:] + live[:shift]:
            cell = cells[key]
            # Collect leftovers of the previous cell, so no one pays for another's garbage;
            # the collector stays on while timing, since real requests pay for their cycles.
            gc.collect()
            try:
                cell.times.append(cell.run(cell.n))
            except Exception as exc:
                if key[0] != "microhandler":
                    raise
                traceback.print_exc(file=sys.stderr)
                cell.error = f"{type(exc).__name__}: {exc}"[:60]
                live.remove(key)


# -------------------------------------------------------------------------------- import

IMPORT_SNIPPET = (
    "import sys; sys.path[:0] = {path!r}; import time; t = time.perf_counter(); "
    "import {mods}; print(time.perf_counter() - t)"
)


def import_ms(modules: str, runs: int, cache_dir: str) -> float | str:
    """Median in-process import time, in ms, each in a fresh interpreter.

    -S: no .pth file runs at start-up. Some environments import certifi, re, pathlib... from
    one, which would hide part of every library's cost; site-packages is put on sys.path by
    hand instead. Bytecode is cached, as an installed package has it, but in cache_dir
    (PYTHONPYCACHEPREFIX) so the repo gets no __pycache__; a first, untimed run fills it."""
    path = [str(ROOT), *site.getsitepackages(), site.getusersitepackages()]
    code = IMPORT_SNIPPET.format(path=path, mods=modules)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    times = []
    for i in range(runs + 1):
        proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=60, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return f"n/a ({last[:50]})"
        if i:
            times.append(float(proc.stdout.strip().splitlines()[-1]) * 1000)
    return statistics.median(times)


def startup_ms(runs: int) -> float:
    """Wall time of `python -c pass`: the interpreter start every import row sits on."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# ------------------------------------------------------------------------------ printing

def version_of(fw: str) -> str:
    if fw == "raw":
        return "-"
    if fw == "microhandler":
        try:
            import microhandler
            return getattr(microhandler, "__version__", "?")
        except Exception:  # unfinished microhandler: its cells say why
            return "n/a"
    return metadata.version({"bottle": "bottle", "falcon": "falcon", "flask": "Flask",
                             "django": "Django"}[fw])


def print_header(args, frameworks: list[str]) -> None:
    print(f"# microhandler benchmark: frameworks ({'quick' if args.quick else 'default'} mode)")
    print()
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- python: {platform.python_implementation()} {sys.version.split()[0]}")
    print(f"- machine: {platform.platform()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {_cpu_model()}")
    print(f"- versions: {', '.join(f'{fw} {version_of(fw)}' for fw in frameworks)}")
    print(f"- cells: median of {args.repeats} repeats, each ~{args.batch * 1000:.0f} ms of "
          "calls; frameworks interleaved within each repeat")
    print()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt_cell(cell: Cell, raw: Cell) -> str:
    if cell.error:
        return f"n/a ({cell.error})"
    if raw.usec is None:
        return f"{cell.usec:.1f} µs"
    return f"{cell.usec / raw.usec:.2f}x ({cell.usec:.1f} µs)"


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "yes" if value <= target else "**NO**"


# Issue 15's goals: microhandler's time ÷ the best peer's in each row, the 1,000 ÷ 10 routes
# ratio, and import time ÷ Bottle's.
PEER_GOAL, SCALING_GOAL, IMPORT_GOAL = 0.85, 1.1, 0.2
PEERS = ["bottle", "falcon", "flask", "django"]


def print_table(scenarios, frameworks, cells, imports, startup, import_runs) -> None:
    # "÷ best peer" does not depend on how cheap the raw floor is: it compares microhandler
    # with the fastest peer of the row directly, the same way on any machine and harness.
    # The import row divides by Bottle's instead, as issue 15's goal does.
    peers = [fw for fw in PEERS if fw in frameworks]
    compare = "microhandler" in frameworks and bool(peers)
    goal_head = ["mh ÷ best peer", "goal"] if compare else []
    head = ["scenario", *frameworks, "target (mh)", "met", *goal_head]
    rows = []
    for sc in scenarios:
        raw = cells[("raw", sc.key)]
        row = [ROW_LABELS[sc.key]]
        row += [fmt_cell(cells[(fw, sc.key)], raw) for fw in frameworks]
        mh = cells.get(("microhandler", sc.key))
        target = TARGETS.get(sc.key)
        if target and mh is not None:
            ratio = mh.usec / raw.usec if mh.usec and raw.usec else None
            row += [f"≤{target}", verdict(ratio, target)]
        else:
            row += ["", ""]
        if compare:
            row += _peer_goal_cols(mh.usec, {fw: cells[(fw, sc.key)].usec for fw in peers})
        rows.append(row)
    keys = {sc.key for sc in scenarios}
    if {"routes10", "routes1000"} <= keys:
        row = ["routes 1000/10"]
        for fw in frameworks:
            lo, hi = cells[(fw, "routes10")].usec, cells[(fw, "routes1000")].usec
            row.append(f"{hi / lo:.2f}" if lo and hi else "n/a")
        rows.append(row + _target_cols(frameworks, row, "scaling") + (
            ["", f"≤{SCALING_GOAL}: {_target_cols(frameworks, row, 'scaling')[1]}"]
            if compare else []))
    if imports:
        row = ["import (ms)"]
        for fw in frameworks:
            value = imports.get(fw, "-")
            row.append(f"{value:.1f}" if isinstance(value, float) else str(value))
        row += _target_cols(frameworks, row, "import")
        if compare:
            mh, bottle = imports.get("microhandler"), imports.get("bottle")
            if isinstance(mh, float) and isinstance(bottle, float):
                row += [f"{mh / bottle:.2f} (÷ bottle)",
                        f"≤{IMPORT_GOAL}: {verdict(mh / bottle, IMPORT_GOAL)}"]
            else:
                row += ["", ""]
        rows.append(row)
    for row in [head, ["---"] * len(head), *rows]:
        print("| " + " | ".join(row) + " |")
    print()
    print("Cells: time per request as a ratio to raw WSGI in the same row (µs per request). "
          "Raw WSGI: a fixed reply checked against PATH_INFO (hello); a path split and a set "
          "lookup (param, routes); json.loads + json.dumps (json); urllib.parse.parse_qs and a "
          "split Cookie header (query+cookie). Every call includes the harness: environ copy, "
          "start_response, body iteration, close().")
    if imports:
        print(f"Import: in-process `import` time in a fresh interpreter (`python -S`, bytecode "
              f"cached), median of {import_runs}; "
              f"interpreter start itself (`python -c pass`, wall): {startup:.1f} ms. "
              f"Django imports `{IMPORTS['django']}`.")
    print("Middleware idioms: " + "; ".join(
        f"{fw}: {MIDDLEWARE_IDIOMS[fw]}" for fw in frameworks) + ".")


def _peer_goal_cols(mh: float | None, peers: dict[str, float | None]) -> list[str]:
    timed = {fw: usec for fw, usec in peers.items() if usec}
    if not mh or not timed:
        return ["n/a", ""]
    best = min(timed, key=timed.__getitem__)
    ratio = mh / timed[best]
    return [f"{ratio:.2f} ({best})", f"≤{PEER_GOAL}: {verdict(ratio, PEER_GOAL)}"]


def _target_cols(frameworks: list[str], row: list[str], key: str) -> list[str]:
    if "microhandler" not in frameworks:
        return ["", ""]
    text = row[1 + frameworks.index("microhandler")]
    try:
        value = float(text)
    except ValueError:
        value = None
    return [f"≤{TARGETS[key]}", verdict(value, TARGETS[key])]


# ---------------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="under 30 s: fewer repeats, shorter")
    p.add_argument("--only", default="", help="comma-separated frameworks (raw is always in)")
    p.add_argument("--scenarios", default="",
                   help="comma-separated rows: " + ",".join(s.key for s in SCENARIOS) + ",import")
    p.add_argument("--repeats", type=int, help="repeats per cell (default 9, quick 5)")
    p.add_argument("--batch", type=float, help="seconds per repeat (default 0.08, quick 0.01)")
    args = p.parse_args(argv)
    # Quick mode keeps more, shorter repeats rather than fewer long ones: a median of 5
    # shrugs off a burst of load from another process, a median of 3 barely does.
    args.repeats = args.repeats or (5 if args.quick else 9)
    args.batch = args.batch or (0.01 if args.quick else 0.08)
    return args


def select(args) -> tuple[list[str], list[Scenario], bool]:
    frameworks = FRAMEWORKS
    if args.only:
        wanted = {name.strip().lower() for name in args.only.split(",")} | {"raw"}
        unknown = wanted - set(FRAMEWORKS)
        if unknown:
            sys.exit(f"unknown framework(s): {', '.join(sorted(unknown))}")
        frameworks = [fw for fw in FRAMEWORKS if fw in wanted]
    scenarios, with_import = SCENARIOS, True
    if args.scenarios:
        wanted = {name.strip() for name in args.scenarios.split(",")}
        unknown = wanted - {s.key for s in SCENARIOS} - {"import"}
        if unknown:
            sys.exit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = [s for s in SCENARIOS if s.key in wanted]
        with_import = "import" in wanted
    return frameworks, scenarios, with_import


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.dont_write_bytecode = True  # the in-process import of microhandler leaves no cache
    frameworks, scenarios, with_import = select(args)
    print_header(args, frameworks)

    cells = {(fw, sc.key): prepare_cell(fw, sc) for sc in scenarios for fw in frameworks}
    measure(cells, args.repeats, args.batch)

    imports, startup = {}, 0.0
    runs = 5 if args.quick else 9
    if with_import:
        with tempfile.TemporaryDirectory(prefix="bench-pycache-") as cache_dir:
            imports = {fw: import_ms(IMPORTS[fw], runs, cache_dir)
                       for fw in frameworks if fw != "raw"}
        startup = startup_ms(runs)

    print_table(scenarios, frameworks, cells, imports, startup, runs)
    timed = [(cell.spread, key) for key, cell in cells.items() if cell.times]
    if timed:
        spread, (fw, row) = max(timed)
        print(f"Largest spread between the repeats of one cell (max/min - 1): {spread:.0%} "
              f"({fw}, {row}).")

    failed = [key for key, cell in cells.items() if cell.error]
    failed += [("import", fw) for fw, v in imports.items() if isinstance(v, str)]
    if failed:
        print(f"\nFAILED cells: {', '.join('/'.join(k) for k in failed)} (tracebacks on stderr)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
