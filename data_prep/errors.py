"""The one error type data_prep raises for bad input: the CLI prints its message (no traceback) and exits 2."""


class PrepError(Exception):
    """Bad input or output folder; the message names the file and says what to do."""
