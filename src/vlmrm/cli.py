"""The ``vlmrm`` command: ``vlmrm score ...`` today; ``vlmrm fit --config ...`` (training,
through LightningCLI) arrives with the trainer."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

USAGE = """usage: vlmrm <command> [options]

commands:
  score     score images, folders or videos against goal and baseline prompts
            (vlmrm score --help)
  fit       train an agent from a config: vlmrm fit --config configs/<task>.yaml
            (not available yet in this version: the trainer is being built)
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
    if command in ("fit", "validate", "test"):
        print(
            f"vlmrm {command}: the trainer is not part of this version yet; "
            "`vlmrm score` works today.",
            file=sys.stderr,
        )
        return 2
    print(f"vlmrm: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
