"""User-facing errors: the CLI prints their message on one line and exits non-zero, without a traceback."""


class OpenLSMError(Exception):
    """Bad input or environment that the user can fix (missing file, malformed PLY, wrong checkpoint...)."""
