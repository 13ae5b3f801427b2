"""Jinja2 templates in a microhandler app, through `App(renderer=...)`.

    pip install jinja2          # or: pip install "microhandler[jinja2]"
    python examples/jinja_app.py [port]

`renderer=` takes any `fn(template_name, context, request) -> str`; `jinja_renderer()` below
builds one. Jinja2 is imported inside the factory, so microhandler itself never needs it.
TemplateResponse works unchanged: middleware can still swap `template_name` and
`context_data` before the renderer is called.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microhandler import App, Request, TemplateResponse, serve

if TYPE_CHECKING:  # for the annotations only: Jinja2 is imported when a renderer is made
    import jinja2

Directories = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


class JinjaRenderer:
    """`renderer(template_name, context, request) -> str` over a Jinja2 Environment, kept
    as `.environment` for adding filters and globals."""

    def __init__(self, environment: jinja2.Environment) -> None:
        self.environment = environment

    def __call__(self, template_name: str, context: dict[str, Any],
                 request: Request | None) -> str:
        # The same names the built-in engine offers, plus url() to reverse a route.
        extra: dict[str, Any] = {"request": request}
        if request is not None and request.app is not None:
            extra["url"] = request.app.reverse
        return self.environment.get_template(template_name).render({**extra, **context})


def jinja_renderer(directories: Directories = (), *,
                   templates: Mapping[str, str] | None = None, strict: bool = False,
                   **options: Any) -> JinjaRenderer:
    """A renderer for `App(renderer=...)` backed by a Jinja2 Environment.

    `directories` are searched in order (FileSystemLoader), after `templates`, a dict of
    name -> source (DictLoader). HTML is auto-escaped; `strict=True` makes an undefined
    name an error instead of an empty string. Other keyword arguments go to
    `jinja2.Environment` (`extensions=`, `trim_blocks=`...).
    """
    try:
        import jinja2
    except ImportError:
        raise ImportError(
            "jinja_renderer() needs Jinja2, which is not installed: "
            "pip install jinja2  (or pip install 'microhandler[jinja2]')"
        ) from None
    loaders: list[jinja2.BaseLoader] = []
    if templates:
        loaders.append(jinja2.DictLoader(dict(templates)))
    if directories:
        paths = [directories] if isinstance(directories, (str, os.PathLike)) else directories
        loaders.append(jinja2.FileSystemLoader([os.fspath(path) for path in paths]))
    options.setdefault("autoescape", True)
    if strict:
        options.setdefault("undefined", jinja2.StrictUndefined)
    return JinjaRenderer(jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), **options))


TEMPLATES = {
    "base.html": """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{% block title %}Jinja2 + microhandler{% endblock %}</title>
</head>
<body>
{% block content %}{% endblock %}
</body>
</html>
""",
    "index.html": """{% extends "base.html" %}
{% block content %}
<h1>Jinja2 + microhandler</h1>
<ul>
{% for name in names %}
  <li><a href="{{ url('hello', name) }}">{{ name }}</a></li>
{% endfor %}
</ul>
{% endblock %}
""",
    "hello.html": """{% extends "base.html" %}
{% block title %}Hello {{ name }}{% endblock %}
{% block content %}
<h1>Hello {{ name }}!</h1>
{% if name|length > 10 %}<p>What a long name.</p>{% endif %}
<p><a href="{{ url('index') }}">Back</a></p>
{% endblock %}
""",
}

app = App(renderer=jinja_renderer(templates=TEMPLATES, strict=True), debug=True)


@app.route("/", name="index")
def index(request: Request) -> TemplateResponse:
    return TemplateResponse("index.html", {"names": ["Ada", "Grace", "<Bobby Tables>"]})


@app.route("/hello/<name>", name="hello")
def hello(request: Request, name: str) -> TemplateResponse:
    return TemplateResponse("hello.html", {"name": name})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    serve(app, port=port)
