"""The typer application: global options, error handling, and the command registry.

Every command lives in its own module under :mod:`stylerig_cli.commands` and is registered below.
User mistakes raise :class:`stylerig.errors.StylerigError`; :func:`main` prints its message and hint
with rich and exits with status 2 (``--debug`` re-raises to show the traceback).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from stylerig import __version__
from stylerig.errors import StylerigError

err_console = Console(stderr=True)
console = Console()

app = typer.Typer(
    name="stylerig",
    help="StyleRig: rig a frozen StyleGAN's portraits (head pose, expression, light) through a 3D face model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"stylerig {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _register() -> None:
    # One import per command module; each module decorates its function with @app.command().
    import stylerig_cli.commands.train_rignet  # noqa: F401
    from stylerig_cli.commands import (  # noqa: F401
        analyze,
        convert,
        demo,
        doctor,
        edit,
        evaluate,
        fit_dfr,
        mix,
        render_demo,
        sample,
        world,
    )


def report_error(e: StylerigError) -> None:
    """Print a user error as one line plus an optional hint."""
    err_console.print(f"[bold red]error:[/] {e.message}", highlight=False)
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {e.hint}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register()
    from stylerig.runtime import tune_allocator

    tune_allocator()  # keep large freed blocks for reuse: ~10% faster CPU rendering (stylerig/runtime.py)
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except StylerigError as e:
        if debug:
            raise
        report_error(e)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as e:  # full disk, permissions: still one clear line
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {e.strerror or e} ({getattr(e, 'filename', '') or ''})")
        err_console.print("[yellow]hint:[/] check the path, its permissions and the free disk space")
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("[yellow]aborted[/]")
        sys.exit(1)
    except Exception as e:
        # Usage errors (bad option values, unknown commands) from typer's click layer: print them the
        # click way and exit 2. Duck-typed, because typer may vendor its own click.
        if callable(getattr(e, "show", None)) and hasattr(e, "exit_code") and not debug:
            e.show()
            sys.exit(int(e.exit_code))
        raise
