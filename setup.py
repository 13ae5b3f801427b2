"""Build hook: the wheel installs microhandler.py as a typed package (PEP 561).

PEP 561 cannot mark a lone module as typed, so a built wheel (and a wheel built from the
sdist) holds `microhandler/__init__.py` (this repository's microhandler.py, unchanged),
`microhandler/__main__.py` (for `python -m microhandler`) and the `py.typed` marker.
Nothing here is committed as a package: the repository keeps its one file. An editable
install (`pip install -e .`) keeps serving the root file as it is. All metadata lives in
pyproject.toml.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

MODULE = "microhandler"
MAIN = f'''"""`python -m {MODULE} module:app [options]`: serve a WSGI application."""

import sys

from {MODULE} import main

sys.exit(main())
'''


class build_py_typed(build_py):  # noqa: N801 (setuptools command names are lower case)
    """Write the module as a package with a py.typed marker into the build directory."""

    def run(self) -> None:
        if getattr(self, "editable_mode", False):  # `pip install -e .`: serve the root file
            super().run()
            return
        package = os.path.join(self.build_lib, MODULE)
        stale = os.path.join(self.build_lib, f"{MODULE}.py")  # a module next to the package
        if os.path.exists(stale):
            os.remove(stale)
        self.mkpath(package)
        with open(f"{MODULE}.py", "rb") as source:   # always copied: no stale build
            self._write(os.path.join(package, "__init__.py"), source.read())
        self._write(os.path.join(package, "__main__.py"), MAIN.encode())
        self._write(os.path.join(package, "py.typed"), b"")

    def _write(self, path: str, data: bytes) -> None:
        with open(path, "wb") as file:
            file.write(data)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        if getattr(self, "editable_mode", False):
            return super().get_outputs(include_bytecode)
        package = os.path.join(self.build_lib, MODULE)
        return [os.path.join(package, name) for name in ("__init__.py", "__main__.py", "py.typed")]


setup(cmdclass={"build_py": build_py_typed})
