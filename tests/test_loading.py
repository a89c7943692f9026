"""Loading VLMs: checkpoint files, folders, embedded names, unknown names, offline failure."""

from __future__ import annotations

import time

import open_clip
import pytest
import torch

from tests.tiny_vlms import TINY_CLIP_CONFIG, save_model_folder
from vlmrm.rewards import ModelWeightsUnavailableError, VLMBackbone, embedded_model_names, loading


def assert_same_weights(model: torch.nn.Module, state_dict: dict) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state_dict.keys()
    for key, value in state_dict.items():
        assert torch.equal(loaded[key].float(), value.float()), key  # the same weights


def test_checkpoint_file_loads_through_pretrained_argument(tiny_clip):
    name, checkpoint = tiny_clip
    backbone = VLMBackbone(name, pretrained=checkpoint)
    assert_same_weights(backbone.model, torch.load(checkpoint))
    assert backbone.embed_prompts(["a cat", "a dog"]).shape == (2, 32)


def test_model_folder_loads_by_local_dir_and_plain_path(tmp_path):
    folder = save_model_folder(tmp_path / "clip", TINY_CLIP_CONFIG, seed=3)
    weights = torch.load(folder / "open_clip_pytorch_model.bin")
    for model in (f"local-dir:{folder}", str(folder)):
        assert_same_weights(VLMBackbone(model).model, weights)


def test_embedded_models_load_by_short_name(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "EMBEDDED_MODELS_DIR", tmp_path)
    folder = save_model_folder(tmp_path / "vlmrm-mini", TINY_CLIP_CONFIG, seed=4)
    assert embedded_model_names() == ["vlmrm-mini"]
    backbone = VLMBackbone("vlmrm-mini")
    assert_same_weights(backbone.model, torch.load(folder / "open_clip_pytorch_model.bin"))


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown VLM 'ViT-B32'\. Did you mean .*'ViT-B-32'"):
        VLMBackbone("ViT-B32")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ValueError, match=r"laion2b_s34b_b79k"):
        VLMBackbone("ViT-B-32", pretrained="laion2b_s34b_b78k")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        VLMBackbone(f"local-dir:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VLMBackbone(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    ("model", "pretrained"),
    [
        ("ViT-B-32", "laion2b_s34b_b79k"),
        ("ViT-bigG-14", "laion2b_s39b_b160k"),
        ("hf-hub:timm/ViT-B-16-SigLIP", None),
        ("RN50", "openai"),
    ],
)
@pytest.mark.parametrize("offline_flag", [True, False])
def test_uncached_weights_fail_fast_with_remedy(
    tmp_path, monkeypatch, model, pretrained, offline_flag
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline_flag)
    # Without the flag, point the hub at a closed local port: unreachable, as on an air-gapped
    # machine, but without ever touching the real network.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    # Failing fast (plain open_clip takes about 50 s of retries) is checked by what happens,
    # not by a clock: at most one connection attempt, with the short probe timeout, no
    # retry sleeps, and no download started.
    connects: list[float | None] = []
    real_connect = loading.socket.create_connection

    def create_connection(address, timeout=None, *args, **kwargs):
        connects.append(timeout)
        return real_connect(address, timeout, *args, **kwargs)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was started")

    sleeps: list[float] = []
    monkeypatch.setattr(loading.socket, "create_connection", create_connection)
    monkeypatch.setattr(time, "sleep", sleeps.append)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", no_download)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_hf", no_download)
    with pytest.raises(ModelWeightsUnavailableError) as error:
        VLMBackbone(model, pretrained=pretrained, cache_dir=str(tmp_path))
    message = str(error.value)
    assert model in message
    assert "pretrained=" in message or "local-dir:" in message
    assert len(connects) == (0 if offline_flag else 1), connects
    assert all(t is not None and t <= loading.HUB_PROBE_TIMEOUT_S for t in connects)
    assert sleeps == []
