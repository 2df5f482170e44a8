"""The ``climit`` command line: ``climit COMMAND [--config FILE] [section.key=value ...]``.

Each command is a small function registered with :func:`command`; the work lives in the
library modules so that everything here is argument parsing and printing. Errors the user can
fix (bad config, missing or damaged artifacts) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from climit import config as config_lib
from climit.errors import ClimitError

Command = Callable[[argparse.Namespace], int | None]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command, bool]] = {}


def command(name: str, help: str, *, args: Callable[[argparse.ArgumentParser], None] | None = None,
            takes_config: bool = True):
    """Register ``fn(args)`` as ``climit NAME``; ``args(parser)`` adds its own flags."""
    def wrap(fn: Command) -> Command:
        _COMMANDS[name] = (help, args or (lambda p: None), fn, takes_config)
        return fn
    return wrap


def config_help() -> str:
    lines = ["configuration keys (set with section.key=value; presets hold only what differs):"]
    for key, tp, default, doc in config_lib.reference():
        lines.append(f"  {key:<32} {doc} [{tp}; default {default}]")
    return "\n".join(lines)


def load_config(args: argparse.Namespace) -> config_lib.ExperimentConfig:
    return config_lib.load(args.config, args.overrides)


def run_dir(cfg: config_lib.ExperimentConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.name


def print_json_or_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols if c != "description"}
    print("  ".join(c.ljust(widths[c]) for c in widths) + "  description")
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in widths) + "  " + str(r["description"]))


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _envs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line")


@command("envs", "list every environment and family with its spec", args=_envs_args,
         takes_config=False)
def cmd_envs(args: argparse.Namespace) -> int:
    from climit import envs

    print_json_or_table(envs.table(), args.json)
    return 0


@command("config", "print the fully resolved config (defaults + preset + overrides) as YAML")
def cmd_config(args: argparse.Namespace) -> int:
    print(config_lib.dump_yaml(load_config(args)), end="")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climit", description="Can a frozen imitator of a continual learner learn in context?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add, _, takes_config) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_,
                           epilog=config_help() if takes_config else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if takes_config:
            p.add_argument("--config", metavar="FILE", help="YAML preset (only what differs from defaults)")
            p.add_argument("overrides", nargs="*", metavar="section.key=value",
                           help="dotted overrides applied after the preset")
        add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, _, fn, _ = _COMMANDS[args.command]
    try:
        return int(fn(args) or 0)
    except config_lib.ConfigError as e:
        print(f"climit: config error: {e}", file=sys.stderr)
        return 2
    except ClimitError as e:
        print(f"climit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("climit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
