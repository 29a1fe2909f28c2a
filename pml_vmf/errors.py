"""The errors pml-vmf raises for what a user can fix: each message says what was wrong and how to fix it."""


class ConfigError(ValueError):
    """A config file or override names a key that does not exist or gives a value of the wrong kind."""


class UnsafeFileError(ValueError):
    """A file pml-vmf will not read because reading it could run code (a pickle): the message names the file."""


class DamagedFileError(ValueError):
    """A file pml-vmf wrote is missing, truncated or altered: the message names the file."""
