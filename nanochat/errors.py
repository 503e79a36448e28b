"""The one exception family the CLI shows as a plain message (no traceback).

Raise a subclass when the user can fix the problem: the message names the value that was wrong and
says what to do instead. Anything else is a bug and keeps its traceback.
"""


class NanochatError(Exception):
    pass
