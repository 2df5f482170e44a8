"""JSON objects on disk (summaries, results, metadata): the one way climit reads them.

Two readings. :func:`read` is for a file that must be there: a missing, undecodable or
non-object file is an ArtifactError naming it. :func:`read_or_empty` is for a file whose
absence or damage only means "not done yet" (a summary torn by a kill: the stage runs again):
it gives ``{}`` then. Either way the caller gets a dict, never a list, a number or a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from climit.errors import ArtifactError


def read(path: str | Path, what: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` names it in errors ("the report summary").

    Raises:
        ArtifactError: the file is missing or unreadable, is not UTF-8 JSON, or holds a JSON
            value other than an object.
    """
    path = Path(path)
    what = what or "the file"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{what} is missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{what} is damaged: {path} is not valid JSON ({e})") from None
    except OSError as e:
        raise ArtifactError(f"{what} cannot be read: {path}: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{what} is damaged: {path} holds a JSON {type(data).__name__}, not "
                            f"an object; is it a climit file?")
    return data


def read_or_empty(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when it is missing or damaged in any way."""
    try:
        return read(path)
    except ArtifactError:
        return {}
