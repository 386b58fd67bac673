"""The base of every error caused by a user's input (files, configs, options).

The CLI prints these as one line naming the file / key and the problem, without a traceback;
anything else is a bug and keeps its traceback.
"""


class DriveMTLError(ValueError):
    """Bad input from the user; the message names the file / key / frame and what was expected."""
