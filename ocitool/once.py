"""``once``: ``functools.cache`` for functions without arguments, without importing functools.

functools loads ``collections`` (~2 ms); the runtime, which engines start several times per
container, caches only a few answers about the host (is libseccomp there, does the kernel
have openat2), each computed on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


def once(function: Callable[[], T]) -> Callable[[], T]:
    """``function``, calling it only the first time and returning that result ever after."""
    results: list[T] = []

    def cached() -> T:
        if not results:
            results.append(function())
        return results[0]

    cached.__name__, cached.__qualname__, cached.__doc__ = function.__name__, function.__qualname__, function.__doc__
    return cached
