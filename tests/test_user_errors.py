"""One message per user mistake: ``vlmrm fit|validate|score`` print ``vlmrm: error: ...``
naming the bad value and the fix, exit with status 2 and show no traceback; ``--debug`` or
``VLMRM_DEBUG=1`` shows it; bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmrm.checkpointing import AtomicCheckpointIO, load_checkpoint_file
from vlmrm.cli import main
from vlmrm.errors import CheckpointError, ConfigError, UserInputError
from vlmrm.main_guard import unguarded

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def run(capsys, *args: str) -> tuple[int, str]:
    """``vlmrm <args>`` in this process: ``(exit status, stderr)``."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # jsonargparse and argparse exit on a bad command line
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_message(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert "error:" in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 5, err
    for text in expected:
        assert text in err, err


def fit_args(tmp_path: Path, config: str, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(CONFIGS / config),
        "--trainer.default_root_dir", str(tmp_path), *extra,
    ]  # fmt: skip


def lightning_like_checkpoint(path: Path) -> Path:
    """A small file in the format of a real checkpoint (weights, counters, plain data)."""
    state = {
        "epoch": 0,
        "global_step": 3,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {"actor.0.weight": torch.randn(64, 64)},
        "RLDataModule": {"env_steps": 300, "rng": [torch.arange(600), 1, 0.5]},
        "hyper_parameters": {"hidden_sizes": [64, 64], "alpha": None},
    }
    AtomicCheckpointIO().save_checkpoint(state, path)
    return path


class Payload:
    """Stands for any pickled object, whose loading could run code."""


@pytest.mark.parametrize(
    ("config", "extra", "expected"),
    [
        ("cartpole_gt.yaml", ["--data.nonexistent", "1"], ["--data.nonexistent", "--help"]),
        ("cartpole_gt.yaml", ["--data.batch_size", "abc"], ["data.batch_size", "abc"]),
        ("quickstart.yaml", ["--data.reward.init_args.alpha", "2"], ["alpha=2.0", "[0, 1]"]),
        ("cartpole_gt.yaml", ["--data.batch_size", "0"], ["batch_size=0"]),
        (
            "quickstart.yaml",
            ["--data.reward.init_args.model", "ViT-Nonexistent-99"],
            ["'ViT-Nonexistent-99'", "open_clip.list_models()"],
        ),
        (
            "cartpole_gt.yaml",
            ["--trainer.accelerator", "cpu", "--trainer.devices", "-5"],
            ["devices", "--trainer"],
        ),
    ],
    ids=["unknown-key", "bad-type", "alpha", "batch-size-0", "unknown-model", "trainer-devices"],
)
def test_bad_config_values_are_one_message(tmp_path, capsys, config, extra, expected):
    code, err = run(capsys, *fit_args(tmp_path, config, *extra))
    assert_one_message(code, err, *expected)


def test_missing_config_file(tmp_path, capsys):
    code, err = run(capsys, "fit", "--config", str(tmp_path / "nope.yaml"))
    assert_one_message(code, err, "nope.yaml", "does not exist")


def test_resume_last_without_an_earlier_run(tmp_path, capsys):
    code, err = run(capsys, *fit_args(tmp_path, "cartpole_gt.yaml", "--ckpt_path", "last"))
    assert_one_message(code, err, "--ckpt_path last", "no checkpoint found", "without --ckpt_path")


def test_unusable_checkpoint_files_are_one_message(tmp_path, capsys):
    checkpoints = tmp_path / "old" / "checkpoints"
    good = lightning_like_checkpoint(checkpoints / "env_steps=300.ckpt")
    truncated = checkpoints / "last.ckpt"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    random_bytes = tmp_path / "random.ckpt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    cases = [
        (tmp_path / "missing.ckpt", ["missing.ckpt", "does not exist"]),
        # The fix names the other checkpoint next to the truncated one.
        (truncated, ["last.ckpt", "truncated", "env_steps=300.ckpt"]),
        (random_bytes, ["random.ckpt", "not a checkpoint", "without --ckpt_path"]),
    ]
    for path, expected in cases:
        code, err = run(capsys, *fit_args(tmp_path, "cartpole_gt.yaml", "--ckpt_path", str(path)))
        assert_one_message(code, err, *expected)
        assert "weights_only=False" not in err


def test_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    foreign = tmp_path / "weights.ckpt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    code, err = run(capsys, *fit_args(tmp_path, "cartpole_gt.yaml", "--ckpt_path", str(foreign)))
    assert_one_message(code, err, "weights.ckpt", "not a Lightning checkpoint")


def test_a_user_error_inside_trainer_fit_is_one_message(tmp_path, capsys, monkeypatch):
    """Raised in the trainer's own checkpoint load (after the envs started): Lightning tears
    the run down and re-raises, and `vlmrm` prints one message."""
    checkpoint = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.6"}, checkpoint)

    def unreadable(self, path, *args, **kwargs):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt (simulated)")

    monkeypatch.setattr(AtomicCheckpointIO, "load_checkpoint", unreadable)
    extra = ["--data.num_envs", "1", "--data.parallel", "false", "--ckpt_path", str(checkpoint)]
    code, err = run(capsys, *fit_args(tmp_path, "cartpole_gt.yaml", *extra))
    assert_one_message(code, err, "ok.ckpt", "simulated")


def test_checkpoints_load_without_pickled_code(tmp_path):
    path = lightning_like_checkpoint(tmp_path / "ok.ckpt")
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert loaded["RLDataModule"]["env_steps"] == 300
    assert torch.equal(loaded["RLDataModule"]["rng"][0], torch.arange(600))

    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.6", "x": Payload()},
               tmp_path / "object.ckpt")  # fmt: skip
    with pytest.raises(CheckpointError, match="Payload") as error:
        load_checkpoint_file(tmp_path / "object.ckpt")
    assert "weights_only=False" not in str(error.value)


@pytest.fixture
def image(tmp_path) -> Path:
    import imageio.v3 as iio

    path = tmp_path / "frame.png"
    iio.imwrite(path, np.zeros((16, 16, 3), dtype=np.uint8))
    return path


def test_score_mistakes_are_one_message(tmp_path, capsys, image):
    unreadable = tmp_path / "noise.png"
    unreadable.write_bytes(np.random.default_rng(0).bytes(2048))
    csv = ["--csv", str(tmp_path / "scores.csv")]
    cases = [
        ([str(tmp_path / "missing.png"), "--goal", "a cat"], ["missing.png", "neither a file"]),
        ([str(unreadable), "--goal", "a cat"], ["noise.png", "Cannot read image"]),
        ([str(image), "--goal", ""], ["--goal ''", "give a sentence"]),
        ([str(image), "--goal", "a cat", "--model", "ViT-Nonexistent-99"], ["ViT-Nonexistent-99"]),
        ([str(image), "--goal", "a cat", "--alpha", "2"], ["alpha=2.0"]),
        ([str(image), "--goal", "a cat", "--batch-sise", "3"], ["--batch-sise", "--help"]),
    ]
    for args, expected in cases:
        model = [] if "--model" in args else ["--model", "vlmrm-tiny"]
        code, err = run(capsys, "score", *args, *model, *csv)
        assert_one_message(code, err, *expected)


def test_debug_shows_the_traceback_of_user_errors(monkeypatch, image, capsys):
    args = ["score", str(image), "--goal", " ", "--model", "vlmrm-tiny"]
    assert run(capsys, *args)[0] == 2
    with pytest.raises(ConfigError, match="--goal"):
        main(["--debug", *args])
    assert "VLMRM_DEBUG" not in os.environ  # --debug does not leak into the environment
    monkeypatch.setenv("VLMRM_DEBUG", "1")
    with pytest.raises(UserInputError, match="--goal"):
        main(args)


def test_bugs_keep_their_traceback(monkeypatch, image):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("vlmrm.score.collect_media_files", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["score", str(image), "--goal", "a cat", "--model", "vlmrm-tiny"])
    monkeypatch.setattr("vlmrm.training_cli.run_training_cli", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fit", "--config", str(CONFIGS / "cartpole_gt.yaml")])


def test_the_vlmrm_command_prints_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vlmrm.cli", *fit_args(tmp_path, "quickstart.yaml"),
         "--data.reward.init_args.alpha", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "vlmrm: error: alpha=2.0 is outside [0, 1]" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing written for a run that never started


# --- a training script without `if __name__ == "__main__":` --------------------------------


SCRIPT = """from vlmrm.training_cli import run_training_cli
run_training_cli([
    "fit", "--config", {config!r}, "--data.overlap", "true", "--data.total_frames", "200",
    "--data.learning_starts", "100", "--trainer.default_root_dir", {root!r},
])
"""


def test_a_script_that_trains_at_import_time_is_refused_before_workers_start(tmp_path):
    """data.overlap spawns a collector process, which imports the main script again. Without
    the guard the old code started a second training run in the worker, which Python stopped
    there, and the trainer waited for the worker for good; now the trainer refuses first."""
    script = tmp_path / "train.py"
    config = str(CONFIGS / "cartpole_gt.yaml")
    script.write_text(SCRIPT.format(config=config, root=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VLMRM_RUN_DIR", None)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "ConfigError: data.overlap starts worker processes" in result.stderr
    assert f"imports {script} again: line 2 runs training at import time" in result.stderr
    assert 'Put the call under `if __name__ == "__main__":`' in result.stderr
    assert "bootstrapping phase" not in result.stderr  # no worker got as far as that


@pytest.mark.parametrize(
    ("source", "line", "refused"),
    [
        ("import x\nx.train()\n", 2, True),
        ('import x\nif __name__ == "__main__":\n    x.train()\n', 3, False),
        ("import x\nif '__main__' == __name__:\n    x.train()\n", 3, False),
        ('import x\nif __name__ == "__main__" and True:\n    x.train()\n', 3, False),
        ('import x\nif __name__ != "__main__":\n    x.train()\n', 3, True),
        ("import x\nif x.ready:\n    x.train()\n", 3, True),
        ("import x\nx.train(\n    1,\n)\n", 3, True),  # inside a multi-line call
        ("def f(:\n", 1, False),  # unparsable: not refused
    ],
)
def test_only_top_level_code_outside_the_main_guard_is_refused(source, line, refused):
    assert unguarded(source, line) is refused
