"""User-facing errors: caught by the CLI and printed as one line, never as a traceback."""


class ClimitError(Exception):
    """A problem the user can fix (bad input, missing or damaged artifacts, no disk space)."""


class ArtifactError(ClimitError):
    """A history, checkpoint or result on disk is missing, truncated or corrupt."""


class TrainingDiverged(ClimitError):
    """NaN or Inf appeared in training; the last good checkpoint is kept."""
