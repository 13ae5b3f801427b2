"""Body and header parsing cost of microhandler next to Werkzeug, in the same run.

Three cases, each timed from the raw environ to the parsed data, with a fresh environ
(and a fresh input stream) per call, as a server would hand them over:

- form: a 1 KB application/x-www-form-urlencoded body -> `request.POST` / `request.form`
- multipart: 4 text fields and a 1 MiB file -> `POST` + `FILES`, file read / `form` + `files`
- cookies: a `Cookie` header with 20 cookies -> `request.COOKIES` / `request.cookies`

    python bench/bench_parsing.py           # default
    python bench/bench_parsing.py --quick   # under 20 s

Both libraries' results are compared once before timing; a difference fails loudly.
An unfinished microhandler shows as "n/a (...)" with its traceback on stderr (exit status 1).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import os
import platform
import random
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import quote_plus

from bench_frameworks import calibrate  # the same calibration for every benchmark here
from werkzeug.wrappers import Request as WZRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # microhandler.py lives at the repository root

LIBS = ["microhandler", "werkzeug"]

try:
    from microhandler import Request as MHRequest
except Exception as _exc:  # unfinished microhandler: each case reports it
    _MH_IMPORT_ERROR = _exc

    def MHRequest(environ):  # stands in for the class, so each case reports the error
        raise _MH_IMPORT_ERROR

# ---------------------------------------------------------------------------------- bodies


def form_body() -> bytes:
    """About 1 KB of urlencoded fields, with escapes and a repeated key, as browsers send."""
    fields = [("username", "alice.example"), ("email", "alice@example.com"),
              ("comment", "Ünïcødé text, with spaces & symbols = fine?"),
              ("tags", "red"), ("tags", "green"), ("tags", "blue")]
    fields += [(f"field{i}", f"value-{i}-" + "x" * 20) for i in range(20)]
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in fields)
    return body.encode("ascii")


BOUNDARY = "----benchBoundary7MA4YWxkTrZu0gW"


def multipart_body(file_size: int) -> bytes:
    """4 text fields and one file of random bytes (binary, so CR, LF and '-' all occur)."""
    payload = random.Random(1234).randbytes(file_size)
    assert BOUNDARY.encode() not in payload
    parts = []
    for i in range(4):
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="field{i}"\r\n'
                     f"\r\nvalue {i}\r\n".encode())
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="upload"; '
                 f'filename="data.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + payload + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def cookie_header() -> str:
    """20 cookies of the kinds a real site collects: ids, tokens, flags, one quoted value."""
    cookies = [("sessionid", "k2j3h4g5f6d7s8a9q0w1e2r3t4y5u6i7"), ("csrftoken", "A" * 64),
               ("theme", "dark"), ("lang", "en-GB"), ("quoted", '"hello world"')]
    cookies += [(f"_ga_{i}", f"GA1.2.{1000000 + i}.{1600000000 + i}") for i in range(15)]
    return "; ".join(f"{k}={v}" for k, v in cookies)


def environ_for(method: str, content_type: str = "", body: bytes = b"", cookie: str = "") -> dict:
    env = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": "/submit",
        "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"] = content_type
        env["CONTENT_LENGTH"] = str(len(body))
    if cookie:
        env["HTTP_COOKIE"] = cookie
    return env


# ----------------------------------------------------------------------------- parsers
# Each parse function takes an environ and returns plain data, so the two libraries'
# results can be compared; the timed loop calls the same functions.

def _close_all(files) -> None:
    for f in files:
        close = getattr(f, "close", None)
        if close is not None:
            close()


def mh_form(env):
    return {k: v for k, v in MHRequest(env).POST.lists()}


def wz_form(env):
    return {k: v for k, v in WZRequest(env).form.lists()}


def mh_multipart(env):
    request = MHRequest(env)
    fields = {k: v for k, v in request.POST.lists()}
    upload = request.FILES["upload"]
    data = upload.read()
    fields["upload"] = (upload.filename, len(data), hash(data))
    _close_all(f for _, files in request.FILES.lists() for f in files)
    return fields


def wz_multipart(env):
    request = WZRequest(env)
    fields = {k: v for k, v in request.form.lists()}
    upload = request.files["upload"]
    data = upload.read()
    fields["upload"] = (upload.filename, len(data), hash(data))
    request.close()  # closes the uploaded files (Werkzeug spools this one to a temp file)
    return fields


def mh_cookies(env):
    return dict(MHRequest(env).COOKIES)


def wz_cookies(env):
    return WZRequest(env).cookies.to_dict()


@dataclass
class Case:
    key: str
    label: str
    env: dict
    body: bytes
    parsers: dict[str, Callable[[dict], object]]
    times: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    differs: bool = False

    def fresh_env(self) -> dict:
        env = self.env.copy()
        env["wsgi.input"] = io.BytesIO(self.body)
        return env


def make_cases() -> list[Case]:
    form = form_body()
    multi = multipart_body(2**20)
    cookie = cookie_header()
    return [
        Case("form", f"urlencoded form ({len(form)} B)",
             environ_for("POST", "application/x-www-form-urlencoded", form), form,
             {"microhandler": mh_form, "werkzeug": wz_form}),
        Case("multipart", f"multipart: 4 fields + 1 MiB file ({len(multi)} B)",
             environ_for("POST", f"multipart/form-data; boundary={BOUNDARY}", multi), multi,
             {"microhandler": mh_multipart, "werkzeug": wz_multipart}),
        Case("cookies", f"Cookie header, 20 cookies ({len(cookie)} B)",
             environ_for("GET", cookie=cookie), b"",
             {"microhandler": mh_cookies, "werkzeug": wz_cookies}),
    ]


# ------------------------------------------------------------------------------ timing

def check(case: Case) -> None:
    """Parse once with each library; Werkzeug is the reference, microhandler must agree."""
    expected = case.parsers["werkzeug"](case.fresh_env())
    try:
        got = case.parsers["microhandler"](case.fresh_env())
        if got != expected:
            # Not necessarily a bug (the libraries may differ on purpose), so it is timed
            # anyway, but flagged in the table and shown here.
            case.differs = True
            print(f"\n--- microhandler, case {case.key}: result differs from Werkzeug ---\n"
                  f"microhandler: {got!r:.400}\nwerkzeug:     {expected!r:.400}",
                  file=sys.stderr)
    except Exception as exc:  # unfinished microhandler: report, go on
        print(f"\n--- microhandler, case {case.key}: failed ---", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        case.errors["microhandler"] = f"{type(exc).__name__}: {exc}"[:60]


def runner(case: Case, lib: str) -> Callable[[int], float]:
    parse = case.parsers[lib]
    base, body = case.env, case.body
    BytesIO = io.BytesIO
    perf_counter = time.perf_counter

    def run(n: int) -> float:
        t0 = perf_counter()
        for _ in range(n):
            env = base.copy()
            env["wsgi.input"] = BytesIO(body)
            parse(env)
        return perf_counter() - t0
    return run


def measure(cases: list[Case], repeats: int, batch_s: float) -> None:
    """Every live (case, library) pair runs once per round, in a rotating order."""
    live = [(case, lib) for case in cases for lib in LIBS if lib not in case.errors]
    runs = {(case.key, lib): runner(case, lib) for case, lib in live}
    for case, lib in live:
        case.counts[lib] = calibrate(runs[(case.key, lib)], batch_s)
        case.times[lib] = []
    gc.collect()
    gc.freeze()  # set-up objects out of the collector's sight, as in bench_frameworks
    for r in range(repeats):
        shift = r % len(live)
        for case, lib in live[shift:] + live[:shift]:
            gc.collect()  # start each batch clean; the collector stays on while timing
            case.times[lib].append(runs[(case.key, lib)](case.counts[lib]))


def usec(case: Case, lib: str) -> float | None:
    if lib in case.errors or not case.times.get(lib):
        return None
    return statistics.median(case.times[lib]) / case.counts[lib] * 1e6


# ---------------------------------------------------------------------------- printing

def print_report(args, cases: list[Case]) -> None:
    microhandler = sys.modules.get("microhandler")
    mh_version = getattr(microhandler, "__version__", "n/a")
    print(f"# microhandler benchmark: parsing ({'quick' if args.quick else 'default'} mode)")
    print()
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- python: {platform.python_implementation()} {sys.version.split()[0]}")
    print(f"- machine: {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"- versions: microhandler {mh_version}, werkzeug {metadata.version('werkzeug')}")
    print(f"- cells: median of {args.repeats} repeats, each ~{args.batch * 1000:.0f} ms of "
          "calls; the two libraries interleaved")
    print()
    print("| case | microhandler µs | werkzeug µs | microhandler / werkzeug |")
    print("|---|---|---|---|")
    for case in cases:
        mh, wz = usec(case, "microhandler"), usec(case, "werkzeug")
        mh_text = f"{mh:.1f}" if mh is not None else f"n/a ({case.errors['microhandler']})"
        ratio = f"{mh / wz:.2f}" if mh is not None and wz else "n/a"
        if case.differs:
            ratio += " (results differ: see stderr)"
        print(f"| {case.label} | {mh_text} | {wz:.1f} | {ratio} |")
    print()
    print("Each call: a fresh environ and input stream, `Request(environ)`, then the parsed "
          "data read (the file read in full, uploads closed). Below 1: microhandler is faster.")
    print("Multipart: Werkzeug spools an upload to a temporary file past 500 KB, microhandler "
          "(per SPEC) past 1 MiB, so at this size only Werkzeug writes to disk.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="under 20 s")
    p.add_argument("--repeats", type=int, help="repeats per cell (default 9, quick 5)")
    p.add_argument("--batch", type=float, help="seconds per repeat (default 0.1, quick 0.03)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 9)
    args.batch = args.batch or (0.03 if args.quick else 0.1)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.dont_write_bytecode = True
    cases = make_cases()
    for case in cases:
        check(case)
    measure(cases, args.repeats, args.batch)
    print_report(args, cases)
    return 1 if any(case.errors for case in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
