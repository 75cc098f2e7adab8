"""The one exception type the command line turns into a clear message."""


class UserError(Exception):
    """A problem with the user's input or environment: printed as one line, non-zero exit, no traceback."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
