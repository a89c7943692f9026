"""The ``vlmrm`` command: ``vlmrm fit --config ...`` (training, through LightningCLI),
``vlmrm validate``, and ``vlmrm score ...``.

A user mistake (a bad config value or option, a missing or corrupt checkpoint, an unknown
model, unreadable frames: any :class:`~vlmrm.errors.UserInputError`) is printed as one
``vlmrm: error: ...`` message, exit status 2, without a traceback; ``--debug`` anywhere on the
command line, or ``VLMRM_DEBUG=1``, shows the traceback too. Every other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["DEBUG_FLAG", "DEBUG_VARIABLE", "OneLineArgumentParser", "debug_enabled", "main"]

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "VLMRM_DEBUG"

USAGE = f"""usage: vlmrm <command> [options] [{DEBUG_FLAG}]

commands:
  fit       train an agent from a config: vlmrm fit --config configs/<task>.yaml
            (vlmrm fit --help; resume with --ckpt_path last)
  validate  evaluate a trained agent: vlmrm validate --config ... --ckpt_path ...
  score     score images, folders or videos against goal and baseline prompts
            (vlmrm score --help)
  compare-rewards
            reward a run's stored transitions with other prompts, alpha or kind, from
            the stored image embeddings (vlmrm compare-rewards RUN_DIR --alpha 0 0.5 1)
  check-reward
            will a config's reward teach the task? score labelled frames of its env
            without training (vlmrm check-reward --config configs/<task>.yaml)

A mistake in a config, option or input file is reported in one line (exit status 2);
{DEBUG_FLAG} (or {DEBUG_VARIABLE}=1) adds the traceback.
"""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, with one short message for a bad command line instead of the usage block
    (for the subcommands that are not LightningCLI: score, compare-rewards, check-reward)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"vlmrm: error: {message}\n(all options: {self.prog} --help)\n")


def debug_enabled() -> bool:
    """Whether user errors should show their traceback (``VLMRM_DEBUG`` set and not 0/false)."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def _rank_prefix() -> str:
    """``vlmrm`` on the launching process, ``vlmrm (rank N)`` on the other ranks of a run."""
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
    return f"vlmrm (rank {rank})" if rank.isdigit() and int(rank) > 0 else "vlmrm"


def _run(command: str, rest: list[str], argv: Sequence[str] | None) -> int:
    if command == "score":
        from vlmrm.score import main as score_main

        return score_main(rest)
    if command == "compare-rewards":
        from vlmrm.reward_comparison import main as compare_main

        return compare_main(rest)
    if command == "check-reward":
        from vlmrm.checks.command import main as check_main

        return check_main(rest)
    # What can be answered without Lightning is answered from the cache: the help text, and
    # the mistakes in options and config files that the option schema can decide.
    from vlmrm import cli_cache

    if cli_cache.help_requested(rest) and (text := cli_cache.cached_help(command)):
        sys.stdout.write(text)
        return 0
    entry = cli_cache.cached(command)
    if entry is not None and entry["schema"] is not None:
        cli_cache.check_arguments(command, rest, entry["schema"])
    # Imported here: `vlmrm score` should not pay for importing Lightning and TorchRL.
    from vlmrm.training_cli import run_training_cli

    # LightningCLI reads sys.argv itself unless given a list (e.g. from tests).
    run_training_cli(None if argv is None else [command, *rest])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        # Also removed from sys.argv: LightningCLI parses it, and Lightning's DDP launcher
        # starts the other ranks with it (they inherit VLMRM_DEBUG instead).
        debug_flag = DEBUG_FLAG in sys.argv[1:]
        sys.argv[1:] = [arg for arg in sys.argv[1:] if arg != DEBUG_FLAG]
        args = sys.argv[1:]
    else:
        debug_flag = DEBUG_FLAG in argv
        args = [arg for arg in argv if arg != DEBUG_FLAG]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command not in ("fit", "validate", "score", "compare-rewards", "check-reward"):
        print(f"vlmrm: error: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
        return 2
    saved = os.environ.get(DEBUG_VARIABLE)
    if debug_flag:
        os.environ[DEBUG_VARIABLE] = "1"
    try:
        from vlmrm.errors import UserInputError

        try:
            return _run(command, rest, argv)
        except UserInputError as error:
            if debug_enabled():
                raise
            message = str(error) or type(error).__name__
            print(f"{_rank_prefix()}: error: {message}", file=sys.stderr)
            return 2
    finally:
        if debug_flag:  # in-process callers (tests, notebooks) get their environment back
            if saved is None:
                os.environ.pop(DEBUG_VARIABLE, None)
            else:
                os.environ[DEBUG_VARIABLE] = saved


if __name__ == "__main__":
    sys.exit(main())
