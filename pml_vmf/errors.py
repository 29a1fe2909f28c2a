"""The errors pml-vmf raises for what a user can fix: each message says what was wrong and how to fix it."""

import re


class ConfigError(ValueError):
    """A config file or override names a key that does not exist or gives a value of the wrong kind."""


class UnsafeFileError(ValueError):
    """A file pml-vmf will not read because reading it could run code (a pickle): the message names the file."""


class DamagedFileError(ValueError):
    """A file pml-vmf wrote is missing, truncated or altered: the message names the file."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line. An error raised in a DataLoader worker reaches the main process with the
    worker's traceback in its message; its last line is the original error, whose class name is dropped here."""
    lines = str(error).strip().splitlines()
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1])
