"""Checkpoints that are never half-written (write to a temporary file, then rename), and that
are read without running code from them, with one clear message when a file is unusable."""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vlmrm.errors import CheckpointError

__all__ = ["AtomicCheckpointIO", "check_checkpoint_file", "load_checkpoint_file"]

# What a torch.save file starts with: a zip archive (torch >= 1.6), or a pickle (older torch).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80
# Entries every Lightning checkpoint has.
_REQUIRED_ENTRIES = ("state_dict", "pytorch-lightning_version")


def other_checkpoints_hint(path: str | os.PathLike) -> str:
    """The fix for an unusable checkpoint: the other ``*.ckpt`` files next to it (newest first),
    or starting without ``--ckpt_path``."""
    path = Path(path)
    try:
        others = sorted(
            (
                p
                for p in path.parent.glob("*.ckpt")
                if p.is_file() and p.name != path.name and not p.name.startswith(".")
            ),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        others = []
    if not others:
        return "Pass another checkpoint file with --ckpt_path, or start without --ckpt_path."
    names = ", ".join(str(p) for p in others[:3]) + (", ..." if len(others) > 3 else "")
    return (
        f"Pass another checkpoint with --ckpt_path (newest first: {names}), "
        "or start without --ckpt_path."
    )


def _unusable(path: str | os.PathLike, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r} {why}. {other_checkpoints_hint(path)}")


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Cheap check (no loading) that ``path`` can be a checkpoint: it exists, is a non-empty
    file, and is a complete zip archive written by ``torch.save`` (or an old-style pickle).

    Run before anything expensive starts (environments, VLMs), so a missing, truncated or
    foreign file is reported at once. Raises :class:`~vlmrm.errors.CheckpointError`.
    """
    path = Path(path)
    if not path.exists():
        raise _unusable(path, "does not exist")
    if not path.is_file():
        raise _unusable(path, "is not a file")
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(4)
    except OSError as error:
        raise _unusable(path, f"cannot be read ({error.strerror or error})") from error
    if size == 0:
        raise _unusable(path, "is empty (0 bytes; a copy or a save was cut off)")
    if head == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise _unusable(
                path,
                f"is truncated or damaged ({size} bytes without a readable zip index: a copy "
                "or a save was cut off)",
            ) from error
        if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
            raise _unusable(path, "is a zip archive but not a checkpoint written by torch.save")
    elif head[0] != _PICKLE_PROTOCOL_OPCODE:
        raise _unusable(path, "is not a checkpoint (not a file written by torch.save)")
    return path


def _unsupported_global(error: BaseException) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def load_checkpoint_file(
    path: str | os.PathLike,
    map_location: Any = None,
    weights_only: bool | None = None,
) -> dict[str, Any]:
    """Load a Lightning checkpoint without running code from it (``weights_only=True``), with
    its tensors memory-mapped where the file format allows (so a multi-GB replay buffer is not
    first read whole into RAM); raise :class:`~vlmrm.errors.CheckpointError` naming the file
    and what to do instead when it is missing, truncated, corrupt or not a checkpoint.

    ``weights_only=False`` is used only when the caller passes it explicitly.
    """
    path = check_checkpoint_file(path)
    weights_only = weights_only is not False
    # Memory mapping needs the zip format; files of torch < 1.6 are read whole.
    with path.open("rb") as file:
        mmap = file.read(4) == _ZIP_MAGIC
    try:
        with warnings.catch_warnings():
            # torch's note on a pickle protocol it did not write: noise next to our message.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(
                path, map_location=map_location, weights_only=weights_only, mmap=mmap
            )
    except pickle.UnpicklingError as error:
        name = _unsupported_global(error)
        if name is not None:
            raise _unusable(
                path,
                f"holds a Python object of type {name}, not only tensors and plain data; "
                "vlmrm reads checkpoints without running code stored in them. Save such state "
                "as tensors, numbers, strings, lists and dicts",
            ) from error
        raise _unusable(
            path, "is corrupt or not a checkpoint (its contents cannot be decoded)"
        ) from error
    except OSError as error:
        raise _unusable(path, f"cannot be read ({error.strerror or error})") from error
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as error:  # a damaged file fails in many ways inside torch.load
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in reason:  # never pass on torch's advice to run stored code
            reason = type(error).__name__
        raise _unusable(path, f"is corrupt ({reason[:160]})") from error
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in _REQUIRED_ENTRIES):
        what = (
            f"a dict with entries {sorted(map(str, checkpoint))[:6]}"
            if isinstance(checkpoint, dict)
            else f"a {type(checkpoint).__name__}"
        )
        raise _unusable(
            path,
            f"is not a Lightning checkpoint (it holds {what}, without "
            f"{' and '.join(map(repr, _REQUIRED_ENTRIES))})",
        )
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose files appear whole or not at all, and that loads them
    without running code stored in them.

    A multi-day run interrupted while writing (Ctrl-C, pre-emption, full disk) keeps its
    previous checkpoint: the new one is written next to it under a temporary name, flushed to
    disk, and moved into place with an atomic ``os.replace``. Loading uses
    :func:`load_checkpoint_file` (``weights_only=True``, memory-mapped, one clear error).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with temporary.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if "://" in str(path):  # remote (fsspec) paths: Lightning's own loader
            return super().load_checkpoint(path, map_location, weights_only is not False)
        return load_checkpoint_file(path, map_location, weights_only)
