"""What ``vlmrm fit`` / ``vlmrm validate`` know before importing Lightning: their options and
help text, cached, so that ``--help`` and the mistakes that need no model answer at once.

Building LightningCLI's parser imports torch, Lightning, TorchRL and open_clip (seconds).
The first time a command's parser is built (any ``vlmrm fit`` run, or ``--help``), its option
schema and help text are written to the cache folder (``VLMRM_CACHE_DIR``, else
``$XDG_CACHE_HOME/vlmrm``, else ``~/.cache/vlmrm``), under a key that changes with any
change of vlmrm's source files or of the installed versions of the libraries that shape the
parser. Later calls read them without importing those libraries:

- ``vlmrm fit --help`` prints the cached text;
- :func:`check_arguments` refuses a missing ``--config`` file, a config file that is not
  YAML, an unknown option or config key (with the nearest valid names) and a value of the
  wrong simple type (``int``, ``float``, ``bool``, a choice), in one message.

The same check runs inside the full CLI before jsonargparse parses (with the schema of the
parser just built), so a mistake gets the same message whether or not the cache exists.
Anything the check cannot decide (class paths, lists, dicts, interpolations) is left to
jsonargparse. ``VLMRM_NO_CLI_CACHE=1`` switches the cache off.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
import typing
from importlib import metadata
from pathlib import Path
from typing import Any

from vlmrm.errors import ConfigError, InputFileError

__all__ = [
    "cache_folder",
    "cached",
    "cached_help",
    "check_arguments",
    "help_requested",
    "schema_from_parser",
    "store",
]

CACHE_VARIABLE = "VLMRM_CACHE_DIR"
DISABLE_VARIABLE = "VLMRM_NO_CLI_CACHE"
# Libraries whose versions change the parser's options or its help text.
_DISTRIBUTIONS = ("lightning", "jsonargparse", "torch", "torchrl", "open_clip_torch", "omegaconf")
_SIMPLE_TYPES = {int: "int", float: "float", bool: "bool", str: "str", type(None): "null"}
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")
_HELP_FLAGS = ("-h", "--help")


def cache_folder() -> Path:
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlmrm"


def _enabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "").strip().lower() in ("", "0", "false", "no")


@functools.cache  # once per process: every lookup and store of the cache needs it
def _key() -> str:
    """A digest of vlmrm's source files, the parser-shaping libraries' versions and Python's."""
    digest = hashlib.sha256(sys.version.encode())
    for name in _DISTRIBUTIONS:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=-".encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def _path(command: str) -> Path:
    return cache_folder() / f"cli-{command}-{_key()}.json"


def cached(command: str) -> dict[str, Any] | None:
    """The cache entry of ``command`` (``{"schema": ..., "help": {width: text}}``) or None."""
    if not _enabled():
        return None
    try:
        return json.loads(_path(command).read_text())
    except (OSError, ValueError):
        return None


def store(command: str, schema: dict[str, Any] | None = None, help_text: str | None = None) -> None:
    """Add a schema and/or the help text (at the current terminal width) to the cache; a cache
    that cannot be written (read-only home) is skipped silently: it only saves time."""
    if not _enabled():
        return
    entry = cached(command) or {"schema": None, "help": {}}
    if schema is not None:
        entry["schema"] = schema
    if help_text is not None:
        entry["help"][str(_terminal_width())] = help_text
    path = _path(command)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(entry, f)
        os.replace(f.name, path)
    except OSError:
        return


def cached_help(command: str) -> str | None:
    entry = cached(command)
    return None if entry is None else entry["help"].get(str(_terminal_width()))


def _terminal_width() -> int:
    # argparse wraps its help at this width (COLUMNS, else the terminal's).
    import shutil

    return shutil.get_terminal_size().columns


def help_requested(args: list[str]) -> bool:
    """``vlmrm fit --help``: the plain help, whose text does not depend on other options."""
    return len(args) == 1 and args[0] in _HELP_FLAGS


# --- the schema ---------------------------------------------------------------------------


def schema_from_parser(parser: Any) -> dict[str, Any]:
    """The options of a jsonargparse (sub)parser: ``{"options": {dest: kind}, "groups": [...]}``.

    A kind is ``{"types": [...], "choices": [...]}`` for options of simple types (int, float,
    bool, str, null, literal choices), or ``"open"`` for anything else (class paths, lists,
    dicts), whose values and nested keys are left to jsonargparse.
    """
    from jsonargparse import ActionConfigFile

    options: dict[str, Any] = {}
    groups: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if dest in ("help", "config", "print_config") or isinstance(action, ActionConfigFile):
            continue
        if dest.endswith(".help"):  # --data.reward.help CLIPReward: help on a class
            options[dest] = "open"
            continue
        hint = getattr(action, "_typehint", None)
        if hint is None:
            # Option groups (trainer, data, data.env: a nested mapping or a config file),
            # linked options and anything without a type hint.
            if type(action).__name__ == "_ActionConfigLoad":
                groups.append(dest)
            else:
                options[dest] = "open"
            continue
        options[dest] = _kind(hint)
    return {"options": options, "groups": groups}


def _kind(hint: Any) -> dict[str, Any] | str:
    types: list[str] = []
    choices: list[Any] = []
    for member in _union_members(hint):
        if typing.get_origin(member) is typing.Literal:
            choices.extend(typing.get_args(member))
        elif member in _SIMPLE_TYPES:
            types.append(_SIMPLE_TYPES[member])
        elif isinstance(member, type) and issubclass(member, os.PathLike):
            types.append("str")
        else:
            return "open"
    return {"types": types, "choices": choices}


def _union_members(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return [m for arg in typing.get_args(hint) for m in _union_members(arg)]
    return [hint]


# --- the check ------------------------------------------------------------------------------


def check_arguments(command: str, args: list[str], schema: dict[str, Any]) -> None:
    """Raise one :class:`~vlmrm.errors.UserInputError` for the first mistake in ``args`` (the
    command line after ``vlmrm <command>``) and the config files it names that the schema can
    decide; return quietly otherwise."""
    if any(arg in _HELP_FLAGS or arg.split("=")[0].endswith(".help") for arg in args):
        return  # help output, not a run
    for name, value in _options(args):
        if name == "config":
            _check_config_file(command, value, schema)
        elif name == "print_config":
            continue
        else:
            kind = _lookup(name, schema, f"option --{name}", command)
            if value is not None and kind != "open" and kind is not None:
                _check_value(f"--{name}", _parse_cli_value(value), kind, command)


def _options(args: list[str]) -> list[tuple[str, str | None]]:
    """``(name, value)`` of each ``--name value`` / ``--name=value`` (``+=`` appends)."""
    found = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("--") or arg == "--":
            continue
        name, equals, value = arg[2:].partition("=")
        name = name.removesuffix("+")
        if not equals:
            if index < len(args) and not args[index].startswith("--"):
                value = args[index]
                index += 1
            else:
                found.append((name, None))
                continue
        found.append((name, value))
    return found


def _check_config_file(command: str, value: str | None, schema: dict[str, Any]) -> None:
    if value is None:
        raise ConfigError(f"--config needs a file: vlmrm {command} --config configs/<task>.yaml")
    path = Path(value)
    if not path.is_file():
        if ":" in value or "\n" in value:
            return  # a YAML string given inline; jsonargparse reads it
        raise InputFileError(
            f"config file {value!r} does not exist (see configs/ for the shipped configs)."
        )
    import yaml

    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise InputFileError(f"config file {value!r} cannot be read: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise InputFileError(
            f"config file {value!r} is not valid YAML{where}: {problem}."
        ) from None
    if content is None:
        return
    if not isinstance(content, dict):
        raise ConfigError(f"config file {value!r} must hold a mapping of options, not {content!r}.")
    _check_mapping(content, "", schema, f"config file {value!r}", command)


def _check_mapping(
    mapping: dict[str, Any], prefix: str, schema: dict[str, Any], where: str, command: str
) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if not prefix and key in ("config", "print_config"):
            continue
        if name in schema["groups"] and isinstance(value, dict):
            _check_mapping(value, f"{name}.", schema, where, command)
            continue
        kind = _lookup(name, schema, f"{where}: key {name!r}", command)
        if kind not in (None, "open"):
            _check_value(f"{where}: {name}", value, kind, command)


def _lookup(name: str, schema: dict[str, Any], what: str, command: str) -> Any:
    """The kind of option ``name`` (``None`` for a group), or one error naming the nearest
    valid names. Keys below an open option (``data.reward.init_args.alpha``) are accepted."""
    options = schema["options"]
    if name in options:
        return options[name]
    if name in schema["groups"]:
        return None
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        if options.get(".".join(parts[:end])) == "open":
            return "open"
    known = [*options, *schema["groups"]]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"{what}: no such option for vlmrm {command}.{hint} (all options: vlmrm {command} --help)"
    )


def _parse_cli_value(value: str) -> Any:
    # As jsonargparse reads a command-line value of a non-string type: as YAML.
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _check_value(what: str, value: Any, kind: dict[str, Any], command: str) -> None:
    if isinstance(value, str) and "${" in value:
        return  # an omegaconf interpolation, resolved later
    types, choices = kind["types"], kind["choices"]
    if _fits(value, types) or any(_same_choice(value, choice) for choice in choices):
        return
    expected = [*types, *(repr(c) for c in choices)]
    raise ConfigError(
        f"{what}={value!r} is not valid: expected {' or '.join(expected)}. "
        f"(all options: vlmrm {command} --help)"
    )


def _fits(value: Any, types: list[str]) -> bool:
    """Whether jsonargparse could accept ``value`` as one of ``types``; generous, so that only
    a value that is certainly wrong is refused here."""
    for name in types:
        if name == "str":
            return True
        if name == "null" and (value is None or str(value).lower() in ("null", "none")):
            return True
        if name == "bool" and (
            isinstance(value, bool) or str(value).strip().lower() in (*_TRUE, *_FALSE)
        ):
            return True
        if name in ("int", "float") and not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if name == "float" or (math.isfinite(number) and number == int(number)):
                return True
    return False


def _same_choice(value: Any, choice: Any) -> bool:
    return value == choice or str(value) == str(choice)
