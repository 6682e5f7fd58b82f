"""`python -m seqlm.train CORPUS --out RUN ...`: the `seqlm train` command as a module,
so that `torchrun --nproc_per_node=N -m seqlm.train CORPUS --out RUN` runs it in N
processes (each joins the job from torchrun's environment; rank 0 writes)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from seqlm.cli.app import main as cli_main

    cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
