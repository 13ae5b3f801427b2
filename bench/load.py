"""Load run: the example JSON app behind real servers (waitress, gunicorn), on loopback.

Not part of the tests. For each server: start it in a subprocess on a free 127.0.0.1 port,
warm it up, then send a fixed number of keep-alive GET requests from a pool of client
threads, in two equal halves. Reported: requests/s, latency percentiles, errors (must be 0),
and the server's resident memory before the run and after each half (it must not grow with
the number of requests served).

    python bench/load.py                       # 20,000 requests per server
    python bench/load.py --requests 5000 --servers waitress

The app is `examples/hello.py`'s `app` when that file exists (route given by --path), else
a tiny microhandler app written to a temporary directory. Nothing is written to the repo:
the servers run with PYTHONDONTWRITEBYTECODE and their logs go to a temporary directory.
Exit status: 0 when every request succeeded and no server's memory grew, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello.py"

FALLBACK_APP = textwrap.dedent('''\
    """A stand-in for examples/hello.py: one JSON route."""
    from microhandler import App

    app = App()


    @app.route("/api/items/<int:id>")
    def item(request, id):
        return {"id": id, "name": f"item {id}", "tags": ["a", "b", "c"], "price": 9.99}
''')

READY_TIMEOUT_S = 30      # a server that is not answering by then has failed to start
REQUEST_TIMEOUT_S = 10    # one request: no client thread can hang the run
MAX_WARMUP = 1000
# Growth allowed over the second half: allocator and thread-pool noise is well below this,
# while a leak of even 100 bytes per request is above it at the default 10,000 per half.
MAX_GROWTH_KIB = 1024


# ---------------------------------------------------------------------------- servers

@dataclass
class AppSource:
    module: str           # "hello:app"
    pythonpath: list[str]
    description: str


def app_source(workdir: Path, app: str | None) -> AppSource:
    if app:  # any WSGI app importable from the current directory, e.g. to compare a peer
        return AppSource(app, [os.getcwd(), str(ROOT)], app)
    if EXAMPLE.exists():
        return AppSource("hello:app", [str(EXAMPLE.parent), str(ROOT)], "examples/hello.py")
    (workdir / "bench_load_app.py").write_text(FALLBACK_APP)
    return AppSource("bench_load_app:app", [str(workdir), str(ROOT)],
                     "fallback app (examples/hello.py not found)")


def free_port() -> int:
    # Ask the kernel for a free loopback port; the server binds it right after.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(name: str, port: int, module: str) -> list[str]:
    if name == "waitress":
        # --listen, not --port: waitress would otherwise listen on every interface.
        return [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}",
                "--threads=8", module]
    if name == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "4",
                "-b", f"127.0.0.1:{port}", module]
    raise ValueError(name)


def start_server(name: str, port: int, source: AppSource, workdir: Path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*source.pythonpath, env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left in the repo or examples/
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_server
    # A new session makes the server the leader of its own process group, so stopping it
    # can reach gunicorn's workers too, and nothing else.
    proc = subprocess.Popen(server_command(name, port, source.module), cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    proc.log = log
    return proc


def stop_server(proc) -> None:
    if proc.poll() is None:
        proc.terminate()  # gunicorn's master stops its workers on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of this server's group is left
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
    proc.log.close()


def log_tail(workdir: Path, name: str, lines: int = 20) -> str:
    text = (workdir / f"{name}.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_ready(proc, port: int, path: str) -> dict:
    """Poll until the server answers the JSON route; return the decoded first response."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path} -> {resp.status} {body[:200]!r} "
                                   "(is --path a JSON route of the app?)")
            if "json" not in (resp.getheader("Content-Type") or ""):
                raise RuntimeError(f"GET {path} is not JSON: {resp.getheader('Content-Type')}")
            return json.loads(body)
        except OSError as exc:
            last_error = str(exc)
            time.sleep(0.1)
        finally:
            conn.close()
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s: {last_error}")


def wait_workers(pid: int, count: int) -> None:
    """gunicorn forks its workers after binding: wait (bounded) until they are all up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(descendants(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.1)


# ----------------------------------------------------------------------------- memory

def descendants(pid: int) -> list[int]:
    """All processes below pid, found through the parent field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of pid and all its descendants (gunicorn: the master and its workers)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ----------------------------------------------------------------------------- client

@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    first_errors: list[str] = field(default_factory=list)


def client_thread(port: int, path: str, count: int, start: threading.Barrier,
                  result: Result, lock: threading.Lock) -> None:
    """Send `count` GETs on one keep-alive connection (reopened after an error)."""
    latencies, errors, messages = [], 0, []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    perf_counter = time.perf_counter
    start.wait()
    for _ in range(count):
        t0 = perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors += 1
                messages.append(f"status {resp.status}")
        except (OSError, http.client.HTTPException) as exc:
            errors += 1
            messages.append(f"{type(exc).__name__}: {exc}")
            conn.close()  # http.client reconnects on the next request
        latencies.append(perf_counter() - t0)
    conn.close()
    with lock:
        result.latencies += latencies
        result.errors += errors
        result.first_errors += messages[: 5 - len(result.first_errors)]


def run_load(port: int, path: str, total: int, threads: int) -> Result:
    """Exactly `total` requests, shared as evenly as possible between the threads."""
    result, lock = Result(), threading.Lock()
    start = threading.Barrier(threads + 1)
    counts = [total // threads + (1 if i < total % threads else 0) for i in range(threads)]
    workers = [threading.Thread(target=client_thread, args=(port, path, n, start, result, lock))
               for n in counts]
    for w in workers:
        w.start()
    start.wait()  # every thread has its connection object: start the clock together
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    result.elapsed = time.perf_counter() - t0
    return result


def percentile(sorted_values: list[float], p: float) -> float:
    index = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


# ------------------------------------------------------------------------------- main

@dataclass
class ServerReport:
    name: str
    requests: int = 0
    rps: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    errors: int = 0
    rss: list[int] = field(default_factory=list)  # KiB: before, after half 1, after half 2
    failure: str = ""
    first_errors: list[str] = field(default_factory=list)
    sample: dict | None = None  # the first response, decoded

    @property
    def stable(self) -> bool:
        return len(self.rss) == 3 and self.rss[2] - self.rss[1] <= MAX_GROWTH_KIB


def bench_server(name: str, args, source: AppSource, workdir: Path) -> ServerReport:
    report = ServerReport(name)
    port = free_port()
    proc = start_server(name, port, source, workdir)
    try:
        report.sample = wait_ready(proc, port, args.path)
        if name == "gunicorn":
            wait_workers(proc.pid, 2)
        # Warm-up first, so the "before" memory already holds the lazily imported code and
        # every worker's first-request setup; what grows after that grows per request.
        run_load(port, args.path, min(MAX_WARMUP, max(args.threads, args.requests // 10)),
                 args.threads)
        report.rss.append(rss_kib(proc.pid))
        half = args.requests // 2
        results = []
        for count in (half, args.requests - half):
            results.append(run_load(port, args.path, count, args.threads))
            report.rss.append(rss_kib(proc.pid))
        summarise(report, results)
    except Exception as exc:  # one server's failure is reported, the next runs
        report.failure = f"{type(exc).__name__}: {exc}\n--- server log ---\n" \
                         f"{log_tail(workdir, name)}"
    finally:
        stop_server(proc)
    return report


def summarise(report: ServerReport, results: list[Result]) -> None:
    latencies = sorted(x for r in results for x in r.latencies)
    report.requests = len(latencies)
    report.rps = report.requests / sum(r.elapsed for r in results)
    report.p50, report.p90, report.p99 = (percentile(latencies, p) * 1000 for p in (50, 90, 99))
    report.max = latencies[-1] * 1000
    report.errors = sum(r.errors for r in results)
    report.first_errors = [m for r in results for m in r.first_errors][:5]


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def signed_mib(kib: int) -> str:
    return f"{kib / 1024:+.2f}"


def print_reports(args, source: AppSource, sample: dict | None, reports) -> None:
    print("# microhandler load run")
    print()
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- python: {platform.python_implementation()} {sys.version.split()[0]}; "
          f"machine: {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"- app: {source.description}, GET {args.path} -> {json.dumps(sample)[:80]}")
    print(f"- client: {args.threads} threads, http.client keep-alive, {args.requests} requests "
          "per server in two halves, after a warm-up; client and server share this machine")
    print("- servers: waitress --threads=8; gunicorn -w 2 --threads 4 (RSS: master + workers)")
    print()
    print("| server | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | "
          "RSS before MiB | Δ half 1 MiB | Δ half 2 MiB | memory |")
    print("|" + "---|" * 12)
    for r in reports:
        if r.failure:
            print(f"| {r.name} | failed: {r.failure.splitlines()[0]} |" + " |" * 10)
            continue
        print(f"| {r.name} | {r.requests} | {r.rps:.0f} | {r.p50:.2f} | {r.p90:.2f} | "
              f"{r.p99:.2f} | {r.max:.1f} | {r.errors} | {mib(r.rss[0])} | "
              f"{signed_mib(r.rss[1] - r.rss[0])} | {signed_mib(r.rss[2] - r.rss[1])} | "
              f"{'stable' if r.stable else '**GROWS**'} |")
    print()
    print(f"memory: stable when the second half grows RSS by at most {mib(MAX_GROWTH_KIB)} MiB "
          "(the first half may still fill caches and thread pools).")
    for r in reports:
        if r.failure:
            print(f"{r.name} failed:\n{r.failure}\n")
        elif r.errors:
            print(f"{r.name}: {r.errors} errors, first ones: {r.first_errors}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="per server (default 20000)")
    p.add_argument("--threads", type=int, default=16, help="client threads (default 16)")
    p.add_argument("--servers", default="waitress,gunicorn", help="comma-separated")
    p.add_argument("--path", default="/api/items/1", help="the JSON route to request")
    p.add_argument("--app", help="serve this module:app instead (importable from the cwd)")
    args = p.parse_args(argv)
    if args.requests < 2 or args.threads < 1:
        p.error("--requests must be at least 2 and --threads at least 1")
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in ("waitress", "gunicorn"):
            p.error(f"unknown server {s!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="microhandler-load-") as tmp:
        workdir = Path(tmp)
        source = app_source(workdir, args.app)
        reports = [bench_server(name, args, source, workdir) for name in args.servers]
        sample = next((r.sample for r in reports if r.sample is not None), None)
        print_reports(args, source, sample, reports)
    failed = any(r.failure or r.errors or not r.stable for r in reports)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
