"""Write a file under a temporary name, renamed only once complete."""
import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """The name to write ``path``'s content to: ``path + '.part'``.

    When the ``with`` block ends normally the part file is renamed onto
    ``path`` (``os.replace``: readers see the old file or the whole new one,
    never a half-written one); when it raises, the part file is removed
    and ``path`` is left as it was.

    Args:
        path: The file to write.

    Yields:
        str: The temporary path to write to.

    Example:
        >>> with atomic_path('out.json') as part:
        ...     with open(part, 'w') as f:
        ...         f.write('{}')
    """
    part = path + '.part'
    try:
        yield part
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)
