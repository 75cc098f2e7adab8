"""Resumable outputs: the attributes that record which command writes an output and whether it is
complete, and the check that a rerun resumes only an output of the same command.

The rank that draws a block first asks the writer whether its chunks exist and skips it if so;
`check_resume` guards against resuming someone else's output; `run_attributes(..., complete=True)`
marks an output finished once every block is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hpc_ilastik.errors import UserError

RUN_KEY = "hpc_ilastik_run"      # output attribute: the fingerprint of the command that writes it
COMPLETE_KEY = "complete"        # output attribute: true only once every block has been written


def file_digest(path: str) -> str:
    """'sha256:<hex>' of a file's content (a project copied elsewhere keeps its fingerprint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def run_attributes(fingerprint: Mapping[str, object], complete: bool = False) -> dict[str, object]:
    """Output attributes recording which command writes it and whether every block is written."""
    return {RUN_KEY: _as_json(fingerprint), COMPLETE_KEY: complete}


def check_resume(existing: Mapping[str, object] | None, fingerprint: Mapping[str, object], output: str) -> bool:
    """Whether to resume `output` (True) or start it (False, `existing` attributes None = no output yet).

    An output written by a different command, or not by hpc-ilastik, is a UserError: never mixed."""
    if existing is None:
        return False
    advice = "remove it or choose another output"
    if RUN_KEY not in existing:
        raise UserError(f"output {output} already exists and was not written by hpc-ilastik; {advice}")
    old, new = _as_json(existing[RUN_KEY]), _as_json(fingerprint)
    if not isinstance(old, dict):
        raise UserError(f"output {output} has an unreadable '{RUN_KEY}' attribute; {advice}")
    differs = [f"{key}: {_short(old.get(key))} then, {_short(new.get(key))} now"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if differs:
        raise UserError(f"output {output} was written by a different command ({'; '.join(differs)}); {advice}")
    return True


def _as_json(value: object) -> Any:
    """The value as it reads back from a JSON attribute (tuples become lists)."""
    return json.loads(json.dumps(value))


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
