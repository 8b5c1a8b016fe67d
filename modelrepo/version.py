"""The project's version, in one place: the installed package's metadata (pyproject.toml's).

The service reports it (its OpenAPI document, KServe's server metadata over HTTP and gRPC);
pyproject.toml is the only place it is written.
"""

from importlib.metadata import version

VERSION = version("mnist-serve")
