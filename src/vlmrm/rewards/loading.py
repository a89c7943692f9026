"""Find and load open_clip models: built-in names with pretrained tags, ``hf-hub:`` ids, local
checkpoint files and folders, and the models vlmrm ships in ``vlmrm/assets/models``.

open_clip alone retries an unreachable hub for about 50 s before failing. Here we first check
whether the weights are already cached; if not, we probe the hub with a short TCP connect and
fail within seconds with a message that names the model and how to provide its weights.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

from vlmrm.errors import ConfigError, InputFileError, UserInputError

__all__ = [
    "ModelWeightsUnavailableError",
    "embedded_model_names",
    "load_open_clip",
]

logger = logging.getLogger(__name__)

EMBEDDED_MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
HUB_PROBE_TIMEOUT_S = 3.0
_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)


class ModelWeightsUnavailableError(UserInputError, RuntimeError):
    """The weights of a VLM are neither cached locally nor downloadable right now."""


def embedded_model_names() -> list[str]:
    """Names of the models shipped inside the package (each a folder with an open_clip config)."""
    if not EMBEDDED_MODELS_DIR.is_dir():
        return []
    return sorted(
        p.name for p in EMBEDDED_MODELS_DIR.iterdir() if (p / "open_clip_config.json").is_file()
    )


@dataclass(frozen=True)
class _HubFile:
    """One file a model needs from the Hugging Face hub; any of ``filenames`` will do."""

    repo_id: str
    filenames: tuple[str, ...]


def load_open_clip(
    model: str,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, Callable[[list[str]], torch.Tensor]]:
    """Build an open_clip model with its weights, and its tokenizer.

    Args:
        model: an open_clip architecture (``"ViT-B-32"``), a hub id
            (``"hf-hub:timm/ViT-B-16-SigLIP"``), a folder (``"local-dir:/path"`` or a plain
            path) holding ``open_clip_config.json`` and weights, or the name of a model shipped
            with vlmrm (see :func:`embedded_model_names`).
        pretrained: for an architecture name, an open_clip pretrained tag
            (``"laion2b_s34b_b79k"``) or a checkpoint file; ``None`` gives random weights.
            Ignored for hub ids and folders, which carry their own weights.
        cache_dir: where downloaded weights live (default: the Hugging Face cache).
        device: where the model is placed.

    Returns:
        ``(model, tokenizer)``: the model in eval mode with ``model.visual.preprocess_cfg`` set
        (size, mean, std, interpolation, resize mode) and a tokenizer mapping prompts to token ids.
    """
    name, pretrained = _resolve_name(model, pretrained)
    needed = _hub_files_needed(name, pretrained)
    with _hub_access(model, pretrained, needed, cache_dir):
        try:
            clip_model = open_clip.create_model(
                name, pretrained=pretrained, cache_dir=cache_dir, device=device
            )
            tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
        except ModelWeightsUnavailableError:
            raise
        except Exception as error:  # open_clip and transformers raise many kinds
            if _is_offline_error(error):
                raise ModelWeightsUnavailableError(
                    _missing_weights_message(model, pretrained, str(error))
                ) from error
            local = _local_weights(name, pretrained)
            if local is not None:
                # A file or folder the user gave: damaged, or not open_clip weights for `model`.
                reason = str(error).splitlines()[0] if str(error) else ""
                if not reason or "weights_only" in reason:  # never relay torch's advice to
                    reason = "not a readable weights file"  # load with weights_only=False
                raise InputFileError(
                    f"The weights {str(local)!r} of VLM {model!r} cannot be loaded "
                    f"({type(error).__name__}: {reason[:200]}). Check that the file is complete "
                    "and holds open_clip weights for this architecture, or use a pretrained tag "
                    "(open_clip.list_pretrained())."
                ) from error
            raise
    if pretrained is None and not name.startswith(("hf-hub:", "local-dir:")):
        logger.warning("VLM %r has random weights (no pretrained tag or file was given).", model)
    clip_model.eval()
    return clip_model, tokenizer


def _resolve_name(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """Map a user-facing name to open_clip's ``(name, pretrained)``; raise on unknown names."""
    if model.startswith(("hf-hub:", "local-dir:")):
        if model.startswith("local-dir:"):
            _check_model_dir(Path(model.removeprefix("local-dir:")), model)
        return model, None
    if model in embedded_model_names():
        return f"local-dir:{EMBEDDED_MODELS_DIR / model}", None
    if os.sep in model or model.startswith("."):
        path = Path(model)
        if path.is_dir():
            _check_model_dir(path, model)
            return f"local-dir:{path}", None
        raise InputFileError(
            f"VLM folder {model!r} does not exist. Give a folder holding open_clip_config.json "
            "and weights, an open_clip model name (see open_clip.list_models()), or an hf-hub: id."
        )
    known = open_clip.list_models()
    if model not in known:
        candidates = known + embedded_model_names()
        close = difflib.get_close_matches(model, candidates, n=5, cutoff=0.5)
        hint = f" Did you mean one of {close}?" if close else ""
        raise ConfigError(
            f"Unknown VLM {model!r}.{hint} Valid names are open_clip.list_models(), "
            f"the embedded models {embedded_model_names()}, 'hf-hub:org/repo' ids, or a folder."
        )
    is_tag = pretrained is not None and bool(open_clip.get_pretrained_cfg(model, pretrained))
    if pretrained is not None and not is_tag and not Path(pretrained).is_file():
        tags = open_clip.list_pretrained_tags_by_model(model)
        close = difflib.get_close_matches(pretrained, tags, n=3, cutoff=0.5)
        raise ConfigError(
            f"Pretrained weights {pretrained!r} for VLM {model!r} are neither an open_clip tag "
            f"nor an existing file. Known tags for {model}: {tags}"
            + (f" (closest: {close})." if close else ".")
        )
    return model, pretrained


def _local_weights(name: str, pretrained: str | None) -> Path | None:
    """The user's own weights file or model folder behind ``(name, pretrained)``, if any."""
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:"))
        return None if folder.resolve().parent == EMBEDDED_MODELS_DIR else folder
    if pretrained is not None and Path(pretrained).is_file():
        return Path(pretrained)
    return None


def _check_model_dir(path: Path, model: str) -> None:
    if not (path / "open_clip_config.json").is_file():
        raise InputFileError(
            f"VLM folder {model!r} has no open_clip_config.json; a model folder needs that config "
            "and a weights file (open_clip_model.safetensors or open_clip_pytorch_model.bin)."
        )


def _hub_files_needed(name: str, pretrained: str | None) -> list[_HubFile | str]:
    """Files that must come from the network: hub files, or plain URLs (OpenAI weights)."""
    if name.startswith("hf-hub:"):
        repo = name.removeprefix("hf-hub:")
        return [_HubFile(repo, ("open_clip_config.json",)), _HubFile(repo, _WEIGHT_FILES)]
    if pretrained is None or name.startswith("local-dir:"):
        return []
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg or "file" in cfg:
        return []  # a local checkpoint file
    if cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/file.bin", or "org/repo/" for the default file name.
        repo, filename = os.path.split(cfg["hf_hub"])
        filenames = (filename,) if filename else _WEIGHT_FILES
        if filename.endswith((".bin", ".pth")):
            filenames = (filename[:-4] + ".safetensors", filename)
        return [_HubFile(repo, filenames)]
    return [cfg["url"]] if cfg.get("url") else []


def _is_cached(item: _HubFile | str, cache_dir: str | None) -> bool:
    if isinstance(item, str):  # open_clip caches URL downloads by file name
        root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip"
        return (root / Path(urllib.parse.urlparse(item).path).name).is_file()
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(item.repo_id, f, cache_dir=cache_dir), str)
        for f in item.filenames
    )


def _hub_reachable(needed: list[_HubFile | str]) -> tuple[bool, str]:
    """Try a TCP connection to each host the missing files live on; ``(ok, host)``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    for item in needed:
        url = item if isinstance(item, str) else constants.ENDPOINT
        parsed = urllib.parse.urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
        except OSError as error:
            return False, f"{parsed.hostname}:{port} unreachable ({error})"
    return True, ""


@contextmanager
def _hub_access(
    model: str, pretrained: str | None, needed: list[_HubFile | str], cache_dir: str | None
) -> Iterator[None]:
    """Run the load offline when everything is cached; fail fast when something is missing."""
    missing = [item for item in needed if not _is_cached(item, cache_dir)]
    if not missing:
        # Everything is local: stop huggingface_hub and transformers from asking the network.
        with _offline_hub():
            yield
        return
    reachable, why = _hub_reachable(missing)
    if not reachable:
        raise ModelWeightsUnavailableError(_missing_weights_message(model, pretrained, why))
    yield


@contextmanager
def _offline_hub() -> Iterator[None]:
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _is_offline_error(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(
        word in text
        for word in ("offline", "connection", "cannot find the requested files", "resolve host")
    )


def _missing_weights_message(model: str, pretrained: str | None, why: str) -> str:
    what = f"{model!r}" + (f" with pretrained={pretrained!r}" if pretrained else "")
    return (
        f"The weights of VLM {what} are not cached and cannot be downloaded ({why}). "
        "Either run once on a machine with internet access so they land in the cache "
        "(~/.cache/huggingface, or the cache_dir you pass) and copy that folder here, "
        "or download the checkpoint yourself and pass its path: "
        "pretrained='/path/open_clip_pytorch_model.bin' for an architecture name, or "
        "model='local-dir:/path/folder' for a folder with open_clip_config.json and weights."
    )
