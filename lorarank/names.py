"""Names that become paths: an experiment's, and a file's inside an archive. One rule each, so that nothing a
config or an archive holds can leave its directory (`results/<experiment>/`, the archive's `<experiment>/`).

Standard library only (`archive`, `verify-archive` and `combine-bases` import it)."""

from __future__ import annotations

import re

# The config schema's pattern (workflow/schemas/config.schema.yaml, a test keeps the two equal): letters,
# digits, '_', '.', '-', never first a '.' or '-', so never '.', '..', a hidden name or something a command
# would read as a flag.
EXPERIMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
EXPERIMENT_RULE = "letters, digits, '_', '.' and '-', not starting with '.' or '-'"


def experiment_problem(name) -> str | None:
    """Why `name` cannot name an experiment, or None."""
    if isinstance(name, str) and EXPERIMENT.fullmatch(name):  # `$` alone lets a final "\n" through
        return None
    return f"experiment name {name!r} is not allowed ({EXPERIMENT_RULE})"


def relpath_problem(name) -> str | None:
    """Why `name` is not a normalised relative path that stays inside its directory, or None: no absolute
    name, no empty, '.' or '..' part (so no '//' and no trailing '/'), no backslash or NUL."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if "\\" in name or "\0" in name:
        return "holds a backslash or NUL"
    if name.startswith("/"):
        return "is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' part"
    return None
