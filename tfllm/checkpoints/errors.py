"""The error raised for a checkpoint that cannot be loaded exactly."""


class CheckpointError(ValueError):
    """A checkpoint is corrupt, unreadable or does not match the model.

    The message always names the file or the key(s) at fault, so a user can tell
    which download or which weight table entry to look at.

    Example:

    ```python
    try:
        state_dict = read_state_dict("path/to/folder")
    except CheckpointError as error:
        logging.error("Cannot load: %s", error)
    ```
    """
