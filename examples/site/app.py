"""A small site: a templated page, static files, a download and a form that remembers you.

Run it with nothing installed but Python:  python examples/site/app.py [port]

- ``/`` renders ``templates/index.html``, which extends ``templates/base.html`` and
  includes ``templates/features.html`` (blocks, a loop, an if, the date filter);
- ``/static/...`` serves ``static/`` with ETag, Last-Modified, 304 and Range;
- ``/download/<name>`` sends a file of ``files/`` as an attachment;
- ``POST /hello`` stores your name in a signed cookie and redirects (POST/redirect/GET)
  with a one-time message; ``POST /forget`` deletes it;
- the session (a signed cookie) counts your visits and carries the messages; every form
  carries its CSRF token, so another site cannot post them for you.
"""

import datetime
import os
import sys
from collections.abc import Mapping
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

from microhandler import (  # noqa: E402
    App,
    CsrfViewMiddleware,
    FileResponse,
    Http404,
    HttpResponse,
    Request,
    SessionMiddleware,
    TemplateResponse,
    add_message,
    redirect,
    serve,
    static,
)

TEMPLATES = os.path.join(HERE, "templates")
STATIC = os.path.join(HERE, "static")
FILES = os.path.join(HERE, "files")
NAME_COOKIE = "name"
# A real site reads its secret from its own configuration; this one is a demo.
SECRET_KEY = os.environ.get("SITE_SECRET_KEY", "change-me: a long random string")
REMEMBER_FOR = 30 * 24 * 3600  # seconds


class Site(App):
    """An App whose every page sees `today`, which the layout (``base.html``) shows: what
    Django does with a context processor."""

    def render_template(self, template_name: str, context: Mapping[str, Any],
                        request: Request | None = None) -> str:
        context = {"today": datetime.date.today(), **context}
        return super().render_template(template_name, context, request)


app = Site(
    [static("/static", STATIC, name="static")],
    middleware=[SessionMiddleware, CsrfViewMiddleware],
    template_dirs=[TEMPLATES],
    secret_key=SECRET_KEY,
    debug=True,
)

FEATURES = [
    {"name": "Templates", "text": "{% extends %}, {% block %}, {% include %}; {{ }} escapes."},
    {"name": "Static files", "text": "ETag, Last-Modified, 304 and Range requests."},
    {"name": "Downloads", "text": "FileResponse with Content-Disposition: attachment."},
    {"name": "Signed cookies", "text": "HMAC-SHA256 over the cookie's name, value and time."},
    {"name": "Sessions and messages", "text": "a visit count and one-time messages in a "
                                              "signed session cookie."},
    {"name": "CSRF protection", "text": "each form carries a token; other sites' posts get "
                                        "a 403."},
]


def downloads() -> list[str]:
    """The files offered for download: only what is in files/, by base name."""
    return sorted(name for name in os.listdir(FILES)
                  if os.path.isfile(os.path.join(FILES, name)) and not name.startswith("."))


@app.route("/", name="index")
def index(request: Request) -> TemplateResponse:
    name = request.get_signed_cookie(NAME_COOKIE, default=None, max_age=REMEMBER_FOR)
    request.session["visits"] = request.session.get("visits", 0) + 1
    return TemplateResponse("index.html", {
        "title": f"Hello, {name}" if name else "microhandler site",
        "name": name,
        "visits": request.session["visits"],
        "features": FEATURES,
        "downloads": downloads(),
    })


@app.route("/download/<name>", methods=["GET"], name="download")
def download(request: Request, name: str) -> FileResponse:
    if name not in downloads():  # never a path built from what the client sent
        raise Http404(f"No download named {name!r}")
    return FileResponse(os.path.join(FILES, name), as_attachment=True)


@app.route("/hello", methods=["POST"], name="hello")
def hello(request: Request) -> HttpResponse:
    name = " ".join(request.POST.get("name", "").split())[:40]
    response = redirect("index")  # POST/redirect/GET: a reload does not post again
    if name:
        response.set_signed_cookie(NAME_COOKIE, name, max_age=REMEMBER_FOR, httponly=True,
                                   samesite="Lax")
        add_message(request, f"Nice to meet you, {name}. I will remember you.", "success")
    return response


@app.route("/forget", methods=["POST"], name="forget")
def forget(request: Request) -> HttpResponse:
    response = redirect("index")
    response.delete_cookie(NAME_COOKIE)
    add_message(request, "Forgotten: your name is no longer kept.")
    return response


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    serve(app, port=port)
