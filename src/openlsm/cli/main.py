"""The `openlsm` console script: one subcommand per module in this folder.

Each subcommand is a dataclass (its fields are the flags, parsed by tyro) with a `run()` method.
Modules here import heavy libraries inside `run()`, so `openlsm --help` stays fast. User errors
(`OpenLSMError`) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

from ..errors import OpenLSMError


def _commands() -> dict[str, type]:
    from .demo import Demo
    from .eval import Eval
    from .export import Export
    from .info import Info
    from .reconstruct import Reconstruct
    from .render import Render
    from .segment import Segment
    from .synth import Synth
    from .train import Train
    from .train_semantics import TrainSemantics
    from .view import View

    return {"demo": Demo, "eval": Eval, "export": Export, "info": Info, "reconstruct": Reconstruct,
            "render": Render, "segment": Segment, "synth": Synth, "train": Train, "train-semantics": TrainSemantics,
            "view": View}


def main(argv: list[str] | None = None) -> int:
    import tyro

    from .. import runtime

    runtime.keep_freed_memory()  # CPU forwards: reuse freed tensor memory instead of page-faulting on new maps
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = tyro.extras.subcommand_cli_from_dict(_commands(), args=argv, prog="openlsm")
        return int(args.run() or 0)
    except OpenLSMError as e:
        print(f"openlsm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openlsm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
