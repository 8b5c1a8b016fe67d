"""``python -m mnist_serve.cli``: the same as the ``mnist-serve`` command."""

from mnist_serve.cli import app

app()
