"""The ``mnist-serve`` command: catalogue, train, serve, load-test, report, and the demo.

One module per command group (:mod:`.models`, :mod:`.serve`, :mod:`.loadtest`,
:mod:`.history`, :mod:`.demo`); the workflows they start live in the packages below
(``training``, ``service``, ``loadtests``). Heavy modules (TensorFlow, Locust, matplotlib) are
imported inside the commands that need them, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import inspect

import typer

from mnist_serve.cli import demo, explore, history, loadtest, models, repository, serve, tune

app = typer.Typer(
    help="Train, serve and load-test MNIST CNN variants: "
    "is the 'optimized' one faster when served?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Show the libraries' own log lines (TensorFlow's C++ start-up, absl, CUDA "
        "probing), here and in the servers started; hidden by default.",
    ),
) -> None:
    """Train, serve and load-test MNIST CNN variants: is the 'optimized' one faster when served?"""
    if verbose:
        from modelrepo.quiet import be_verbose

        be_verbose()


app.command("variants")(models.list_variants)
app.command("train")(models.train)
app.command("export")(models.export)
app.command("serve")(serve.serve)
app.command("loadtest")(loadtest.loadtest)
app.command("report")(loadtest.report)
app.command("demo")(demo.demo)
app.command("explore")(explore.explore)
app.command("tune")(tune.tune)
app.add_typer(history.app, name="history")
app.add_typer(repository.app, name="models")


def reflow(doc: str) -> str:
    """A docstring as help text: its paragraphs each on one line. Typer's rich help keeps a
    paragraph's line breaks, so a terminal narrower than the source wraps each line again."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


for _group in (app, history.app, repository.app):
    for _info in _group.registered_commands:
        if _info.help is None and _info.callback is not None and _info.callback.__doc__:
            _info.help = reflow(_info.callback.__doc__)

__all__ = ["app"]
