"""The ``vlmrm`` command: ``vlmrm fit --config ...`` (training, through LightningCLI),
``vlmrm validate``, and ``vlmrm score ...``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

USAGE = """usage: vlmrm <command> [options]

commands:
  fit       train an agent from a config: vlmrm fit --config configs/<task>.yaml
            (vlmrm fit --help; resume with --ckpt_path last)
  validate  evaluate a trained agent: vlmrm validate --config ... --ckpt_path ...
  score     score images, folders or videos against goal and baseline prompts
            (vlmrm score --help)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command == "score":
        from vlmrm.score import main as score_main

        return score_main(rest)
    if command in ("fit", "validate"):
        # Imported here: `vlmrm score` should not pay for importing Lightning and TorchRL.
        from vlmrm.training_cli import run_training_cli

        # LightningCLI reads sys.argv itself unless given a list (e.g. from tests).
        run_training_cli(None if argv is None else args)
        return 0
    print(f"vlmrm: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
