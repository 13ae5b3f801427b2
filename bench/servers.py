"""Requests/s of the built-in server beside waitress, Werkzeug's dev server and Bottle's run().

Not part of the tests. Each server runs the same hello app in a subprocess on a free
127.0.0.1 port; a client process-local pool of keep-alive connections (raw sockets, so the
client costs little) sends GET / for a fixed time. Servers are measured in interleaved
rounds (A B C D, A B C D, ...) so that a noisy neighbour on a shared machine hits them all
alike; the median of each server's rounds is reported, and its ratio to the built-in one.

    python bench/servers.py                          # 3 rounds of 3 s, 8 clients
    python bench/servers.py --rounds 5 --seconds 5 --clients 8 --app wsgi

--app microhandler (default): an App with one route; --app wsgi: a bare WSGI function, so
the servers' own cost is all that is measured. A server whose package is missing is skipped.
Bottle's run() uses its default server (wsgiref, one thread, a connection per request);
Werkzeug's run_simple() is threaded. Clients reconnect when a server closes the connection.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVER_SCRIPT = textwrap.dedent('''\
    import sys
    kind, app_kind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if app_kind == "wsgi":
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
            return [b"Hello, World!"]
    else:
        from microhandler import App
        app = App()
        app.add_route("/", lambda request: "Hello, World!")
    if kind == "microhandler":
        import microhandler
        microhandler.make_server(app, "127.0.0.1", port).serve_forever()
    elif kind == "waitress":
        import waitress
        waitress.serve(app, host="127.0.0.1", port=port, threads=8, _quiet=True)
    elif kind == "werkzeug":
        import logging
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from werkzeug.serving import run_simple
        run_simple("127.0.0.1", port, app, threaded=True)
    elif kind == "bottle":
        import bottle
        bottle.run(app=app, host="127.0.0.1", port=port, quiet=True)
''')

SERVERS = {"microhandler": "microhandler", "waitress": "waitress", "werkzeug": "werkzeug",
           "bottle": "bottle"}
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
READY_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str, app_kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    script = workdir / "bench_server.py"
    script.write_text(SERVER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, str(script), kind, app_kind, str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} did not start within {READY_TIMEOUT_S} s")


def read_response(sock: socket.socket, pending: bytes) -> tuple[bool, bytes]:
    """Read one response; (the server keeps the connection, bytes read past it)."""
    data = pending
    while (end := data.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head = data[:end].lower()
    if not head.startswith(b"http/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise ValueError(f"unexpected response {data[:80]!r}")
    start = head.find(b"content-length:")
    if start < 0:
        raise ValueError("no Content-Length")
    length = int(head[start + 15:head.find(b"\r\n", start) if b"\r\n" in head[start:] else None])
    body_end = end + 4 + length
    while len(data) < body_end:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        data += chunk
    keep = b"connection: close" not in head and not head.startswith(b"http/1.0")
    return keep, data[body_end:]


def client(port: int, stop_at: float, counts: list[int], errors: list[str]) -> None:
    done = 0
    sock = None
    pending = b""
    while time.monotonic() < stop_at:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pending = b""
            sock.sendall(REQUEST)
            keep, pending = read_response(sock, pending)
            done += 1
            if not keep:
                sock.close()
                sock = None
        except (OSError, ValueError) as exc:
            errors.append(repr(exc))
            if sock is not None:
                sock.close()
            sock = None
            if len(errors) > 100:
                break
    if sock is not None:
        sock.close()
    counts.append(done)


def measure(port: int, seconds: float, clients: int) -> tuple[float, int]:
    counts: list[int] = []
    errors: list[str] = []
    started = time.monotonic()
    stop_at = started + seconds
    threads = [threading.Thread(target=client, args=(port, stop_at, counts, errors), daemon=True)
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - started
    return sum(counts) / elapsed, len(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--app", choices=["microhandler", "wsgi"], default="microhandler")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    kinds = [k for k in args.servers.split(",") if k == "microhandler"
             or importlib.util.find_spec(SERVERS[k]) is not None]
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors: dict[str, int] = dict.fromkeys(kinds, 0)
    with tempfile.TemporaryDirectory() as tmp:
        running = {kind: start(kind, args.app, Path(tmp)) for kind in kinds}
        try:
            for _, port in running.values():
                measure(port, 0.5, args.clients)   # warm-up
            for _ in range(args.rounds):
                for kind, (_, port) in running.items():
                    rate, failed = measure(port, args.seconds, args.clients)
                    results[kind].append(rate)
                    errors[kind] += failed
        finally:
            for proc, _ in running.values():
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    base = statistics.median(results["microhandler"]) if "microhandler" in results else None
    print(f"app={args.app} clients={args.clients} rounds={args.rounds}x{args.seconds}s "
          f"python={sys.version.split()[0]} cpus={os.cpu_count()}")
    for kind in kinds:
        median = statistics.median(results[kind])
        ratio = f"{median / base:.2f}x built-in" if base else ""
        print(f"{kind:>12}: {median:8.0f} req/s  {ratio}  errors={errors[kind]}  "
              f"rounds={[round(r) for r in results[kind]]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
