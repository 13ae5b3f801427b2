"""A JSON API for notes, kept in sqlite3, that a web page on another origin may call.

    python examples/notes_api.py [port]
    curl -H "Authorization: Bearer dev-token" http://127.0.0.1:8000/notes
    curl -H "Authorization: Bearer dev-token" -H "Content-Type: application/json" \\
         -d '{"text": "buy milk"}' http://127.0.0.1:8000/notes

- ``GET /notes``, ``POST /notes``, ``GET|PUT|DELETE /notes/<id>``: JSON in, JSON out;
- ``request.db`` is a connection to the sqlite3 file from ``App(database=...)``, and with
  ``atomic_requests=True`` each view is one transaction: committed when it returns, rolled
  back when it raises (a 400 or a 404 included), so no half-done change is ever kept;
- every request needs ``Authorization: Bearer <token>`` (compared in constant time); a
  browser never attaches that header by itself, so no CSRF token is needed here;
- ``CorsMiddleware`` lets the front-ends listed in ``NOTES_FRONTENDS`` call the API from a
  browser: it answers their preflights (which carry no token) before the token check, and
  puts the CORS headers on every answer, a 401 included, so the page can read the error.

Configuration comes from the environment, as a deployed service would have it:
``NOTES_DB`` (the sqlite3 file), ``NOTES_TOKEN`` and ``NOTES_FRONTENDS`` (origins,
separated by spaces).
"""

import contextlib
import functools
import hmac
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microhandler import (
    App,
    BadRequest,
    CorsMiddleware,
    Http404,
    HttpResponse,
    JsonResponse,
    Request,
    serve,
)

SCHEMA = """CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)"""
COLUMNS = ("id", "text", "created")
MAX_TEXT = 10_000

View = Callable[[Request], HttpResponse]


def bearer_token(token: str) -> Callable[[View], View]:
    """Middleware: refuse (401) any request without `Authorization: Bearer <token>`."""
    expected = token.encode()

    def factory(get_response: View) -> View:
        def check_token(request: Request) -> HttpResponse:
            scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(sent.encode(), expected):
                return get_response(request)
            return JsonResponse({"error": "send Authorization: Bearer <token>"}, status=401,
                                headers={"WWW-Authenticate": 'Bearer realm="notes"'})
        return check_token
    return factory


def note_text(request: Request) -> str:
    """The note's text from a JSON body {"text": "..."}; 400 for anything else."""
    data = request.json
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise BadRequest(f'send {{"text": "..."}}: non-empty, at most {MAX_TEXT} characters')
    return text


def found(db: sqlite3.Connection, note_id: int) -> dict[str, Any]:
    """The note as JSON-ready dict; 404 when there is none."""
    row = db.execute("SELECT id, text, created FROM notes WHERE id = ?", (note_id,)).fetchone()
    if row is None:
        raise Http404(f"No note {note_id}")
    return dict(zip(COLUMNS, row, strict=True))


def make_app(database: str, token: str, frontends: Iterable[str] = ()) -> App:
    """The API over the sqlite3 file `database`, for bearers of `token`, callable from the
    browser origins in `frontends`."""
    connect = functools.partial(sqlite3.connect, database)
    with contextlib.closing(connect()) as db, db:
        db.execute(SCHEMA)

    app = App(
        # request.db: a connection from a per-thread pool, and each view one transaction,
        # committed when it returns, rolled back when it raises (a 400 or 404 included).
        database=connect, atomic_requests=True,
        middleware=[
            # Outermost: preflights are answered before the token check, and the CORS
            # headers reach every answer, a 401 or a 404 included.
            CorsMiddleware(allow_origins=list(frontends),
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Location"]),
            bearer_token(token),
        ])

    @app.route("/notes", methods=["GET", "POST"], name="notes")
    def notes(request: Request) -> dict[str, Any] | HttpResponse:
        db: sqlite3.Connection = request.db
        if request.method == "GET":
            rows = db.execute("SELECT id, text, created FROM notes ORDER BY id")
            return {"notes": [dict(zip(COLUMNS, row, strict=True)) for row in rows]}
        cursor = db.execute("INSERT INTO notes (text) VALUES (?)", (note_text(request),))
        assert cursor.lastrowid is not None   # set by every INSERT into a rowid table
        note = found(db, cursor.lastrowid)
        response = JsonResponse(note, status=201)
        response["Location"] = app.reverse("note", id=note["id"])
        return response

    @app.route("/notes/<int:id>", methods=["GET", "PUT", "DELETE"], name="note")
    def note(request: Request, id: int) -> dict[str, Any] | HttpResponse:
        db: sqlite3.Connection = request.db
        current = found(db, id)
        if request.method == "GET":
            return current
        if request.method == "PUT":
            db.execute("UPDATE notes SET text = ? WHERE id = ?", (note_text(request), id))
            return found(db, id)
        db.execute("DELETE FROM notes WHERE id = ?", (id,))
        return HttpResponse(status=204)

    return app


app = make_app(os.environ.get("NOTES_DB", "notes.sqlite3"),
               os.environ.get("NOTES_TOKEN", "dev-token"),
               [origin for origin in os.environ.get("NOTES_FRONTENDS",
                                                    "http://127.0.0.1:5173").split(" ")
                if origin])

if __name__ == "__main__":
    serve(app, port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
