"""Regenerate the README's CLI and config references and its table of environment interfaces:
``python -m climit.docs [--check]``.

The references live between marker comments in README.md; a test fails when they drift.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from climit import config as config_lib

README = Path(__file__).resolve().parents[1] / "README.md"


def cli_reference() -> str:
    from climit import cli

    parser = cli.build_parser()
    lines = ["| command | what it does |", "| --- | --- |"]
    for name, (help_, *_rest) in cli._COMMANDS.items():
        lines.append(f"| `climit {name}` | {help_} |")
    lines.append("")
    lines += _flag_lines("climit", parser)
    return "\n".join(lines).rstrip()


def _flag_lines(prefix: str, parser: argparse.ArgumentParser) -> list[str]:
    """One paragraph per (sub)command with flags, its subcommands' after it (``climit bench
    teacher``...), in the parser's order."""
    lines = []
    for name, p in _subcommands(parser):
        flags = [a for a in p._actions if a.option_strings and a.dest != "help"]
        if flags:
            lines += [f"`{prefix} {name}` flags: " + "; ".join(
                f"`{'/'.join(a.option_strings)}` {a.help}" for a in flags) + ".", ""]
        lines += _flag_lines(f"{prefix} {name}", p)
    return lines


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, p) for action in parser._actions
            if isinstance(action, argparse._SubParsersAction) for name, p in action.choices.items()]


def interfaces() -> str:
    """The table of environment interfaces (:func:`climit.envs.interface_table`)."""
    from climit import envs  # JAX and gymnax: imported only when this section is rendered

    return envs.interface_table()


SECTIONS = {"config-reference": config_lib.reference_markdown, "cli-reference": cli_reference,
            "interfaces": interfaces}


def render(text: str) -> str:
    for name, fn in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the {name} markers")
        body = fn()
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = ap.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        return int(old != new)
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
