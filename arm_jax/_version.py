"""The package's version, without importing anything heavy."""
from __future__ import annotations


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed, the
    one pyproject.toml names (else "unknown")."""
    from importlib import metadata

    try:
        return metadata.version("arm-jax")
    except metadata.PackageNotFoundError:
        import pathlib
        import re

        pyproject = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        except OSError:
            found = None
        return found.group(1) if found else "unknown"


__version__ = _version()
