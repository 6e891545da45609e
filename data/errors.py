"""The one error type the data layer raises for bad files, missing data and failed downloads.

Every message is one line that names the file and says what to do next; the CLIs print it
without a traceback and exit non-zero.
"""


class DataError(Exception):
    """A dataset file is missing, corrupt, of the wrong format or fails its checksum."""
