"""The ``vlmrm`` answers that need no model come without importing torch or Lightning: help
texts, and the mistakes in options and config files that the cached option schema decides,
with the same message as the full parser gives. (Start-up time itself is measured in
tools/bench_fit.py, never asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlmrm import cli_cache
from vlmrm.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")

# Bad inputs (config file contents or options) and a word their one message must contain.
MISTAKES = {
    "missing config file": (["--config", "no/such/file.yaml"], "does not exist"),
    "config key typo": ({"data": {"num_envz": 3}}, "'data.num_envs'"),
    "config value of the wrong type": ({"data": {"num_envs": "four"}}, "expected int"),
    "config group typo": ({"trainr": {"devices": 1}}, "'trainer'"),
    "option typo": (["--trainer.devicez", "2"], "'trainer.devices'"),
    "option value of the wrong type": (["--data.overlap", "maybe"], "expected bool"),
    "not one of the choices": (["--data.on_reward_change", "drop"], "'relabel' or 'keep'"),
    "not YAML": ("data: [unclosed\n", "not valid YAML"),
}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cli_cache.CACHE_VARIABLE, str(folder))
    monkeypatch.delenv(cli_cache.DISABLE_VARIABLE, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    return folder


def arguments_for(mistake, tmp_path: Path) -> list[str]:
    content, _ = MISTAKES[mistake]
    if isinstance(content, list):
        return ["fit", "--config", QUICKSTART, *content]
    path = tmp_path / "mistake.yaml"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return ["fit", "--config", QUICKSTART, "--config", str(path)]


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_and_mistakes_give_the_same_answer_with_and_without_the_cache(cache, tmp_path, capsys):
    # No cache yet: the full parser answers (and fills the cache as it builds).
    with pytest.raises(SystemExit) as done:
        main(["fit", "--help"])
    assert done.value.code == 0
    live_help = capsys.readouterr().out
    assert "--data.overlap" in live_help and "--trainer.devices" in live_help
    live = {}
    for mistake in MISTAKES:
        for entry in cache.glob("cli-*.json"):
            entry.unlink()
        live[mistake] = run_main(arguments_for(mistake, tmp_path), capsys)
    # Cached: the same answers, from cli.main before Lightning is imported.
    with pytest.raises(SystemExit):
        main(["fit", "--help"])  # fills the cache's help text again
    capsys.readouterr()
    assert run_main(["fit", "--help"], capsys) == (0, live_help, "")
    for mistake, (_, word) in MISTAKES.items():
        code, out, err = run_main(arguments_for(mistake, tmp_path), capsys)
        assert (code, out, err) == live[mistake], mistake
        assert code == 2 and err.startswith("vlmrm: error: ") and word in err, (mistake, err)
        assert len(err.strip().splitlines()) == 1, err


def test_every_shipped_config_and_the_readme_overrides_pass_the_check(cache, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    capsys.readouterr()
    schema = cli_cache.cached("fit")["schema"]
    overrides = [
        "--trainer.devices", "4", "--trainer.num_nodes", "2", "--trainer.precision", "bf16-mixed",
        "--data.reward.init_args.alpha", "0.5", "--data.num_envs", "8", "--data.overlap", "true",
        "--trainer.callbacks+=tests.test_training.InterruptAfter", "--ckpt_path", "last",
        "--data.resume_without_buffer", "true", "--model.alpha", "null", "--run_name", "x",
        "--data.env.render_height", "224", "--trainer.logger", "WandbLogger",
        "--data.reward_schedule", "[{at_env_steps: 10, alpha: 1.0}]",
    ]  # fmt: skip
    for config in sorted(CONFIGS.glob("*.yaml")):
        cli_cache.check_arguments("fit", ["--config", str(config), *overrides], schema)


def test_no_heavy_import_before_it_is_needed(cache, tmp_path, capsys):
    """In a fresh interpreter with a warm cache, these answers import neither torch nor
    Lightning (the cost of `vlmrm fit --help` was seconds of imports)."""
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    capsys.readouterr()
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  num_envz: 3\n")
    commands = [
        ["--help"],
        ["fit", "--help"],
        ["fit", "--config", str(bad)],
        ["fit", "--config", "missing.yaml"],
        ["score", "--help"],
        ["score", str(tmp_path / "missing.png"), "--goal", "a robot"],
        ["compare-rewards", "--help"],
        ["compare-rewards", str(tmp_path / "no_run")],
        ["check-reward", "--help"],
    ]
    probe = (
        "import sys; from vlmrm.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'torchrl', 'open_clip') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy, 'CODE', code, file=sys.stderr)\n"
    )
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=300
        )
        assert "HEAVY [] CODE" in result.stderr, (command, result.stderr[-2000:])
