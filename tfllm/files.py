"""File helpers shared by every writer of models, tokenizers and exports."""

import os


def umask_permissions(path, mode=0o666):
    """Sets `path`'s permissions to `mode` less the process umask, as a plain `open` would have made them.

    Writers that go through `tempfile.mkstemp` (or libraries such as safetensors) create files 0600;
    a published model file must be readable by the server that loads it.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)
