"""Refuse, before any process starts, a script that would start training in every worker.

``data.overlap`` and ``data.parallel`` start worker processes with the ``spawn`` method, and a
spawned process imports the main script again. A script that calls
:func:`~vlmrm.training_cli.run_training_cli` at its top level, outside ``if __name__ ==
"__main__":``, would start a whole second training run in each worker; Python stops that run
with an error inside the worker, and the trainer kept waiting for a worker that never came
(measured: no exit after 2 minutes). So the trainer checks its own script first: the line of
the main module that is running now must sit inside an ``if __name__ == "__main__":`` block.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from vlmrm.errors import ConfigError

__all__ = ["check_main_module_is_guarded", "unguarded"]


def check_main_module_is_guarded(feature: str) -> None:
    """Raise :class:`ConfigError` when the main script is running its top-level code outside
    ``if __name__ == "__main__":`` (``feature`` names the setting that starts the workers).

    Nothing is checked without a main script file (``python -c``, notebooks, the REPL) or when
    its source cannot be read.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or not Path(path).is_file():
        return
    line = _running_line(main.__dict__)
    if line is None:
        return
    try:
        source = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return
    if unguarded(source, line):
        raise ConfigError(
            f"{feature} starts worker processes, and each of them imports {path} again: "
            f"line {line} runs training at import time. Put the call under "
            '`if __name__ == "__main__":` so that the workers do not start training too.'
        )


def unguarded(source: str, line: int) -> bool:
    """Whether ``line`` (1-based) of the module ``source`` is top-level code outside every
    ``if __name__ == "__main__":`` block (function and class bodies never count: they run only
    when called). Unparsable source counts as guarded."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for statement in tree.body:
        end = getattr(statement, "end_lineno", statement.lineno)
        if statement.lineno <= line <= end:
            return not (isinstance(statement, ast.If) and _tests_main_name(statement.test))
    return False


def _tests_main_name(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round), alone or inside an ``and``."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_tests_main_name(value) for value in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, *test.comparators]
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    constants = [side.value for side in sides if isinstance(side, ast.Constant)]
    return names == ["__name__"] and constants == ["__main__"]


def _running_line(main_globals: dict) -> int | None:
    """The line the main module's top-level code is executing now (its outermost frame)."""
    frame = sys._getframe(1)
    line = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is main_globals:
            line = frame.f_lineno  # keep going: the outermost such frame is the script's
        frame = frame.f_back
    return line
