"""The smallest useful microhandler app: a page, a path parameter and a JSON API.

Run it with nothing installed but Python:  python examples/hello.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microhandler import App, Http404, Request, escape, serve

app = App(debug=True)
ITEMS: dict[int, dict[str, object]] = {
    1: {"id": 1, "name": "teapot"},
    2: {"id": 2, "name": "kettle"},
}


@app.route("/")
def index(request: Request) -> str:
    return "Hello from microhandler. Try /hello/you or /api/items/1"


@app.route("/hello/<name>")
def hello(request: Request, name: str) -> str:
    return f"Hello {escape(name)}"  # a str is served as text/html: escape what users send


@app.route("/api/items", methods=["GET"], name="items")
def list_items(request: Request) -> list[dict[str, object]]:
    return list(ITEMS.values())


@app.route("/api/items/<int:id>", methods=["GET", "PUT"], name="item")
def item(request: Request, id: int) -> dict[str, object]:
    if id not in ITEMS:
        raise Http404(f"No item {id}")
    if request.method == "PUT":
        ITEMS[id] = {**request.json, "id": id}
    return ITEMS[id]


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    serve(app, port=port)
