"""Known third-party notices that would reach a user's terminal on milco-os's own paths, each dropped precisely.

Every entry names the one logger that emits the notice and words of that notice alone: nothing else that logger
says is touched, and Python warnings are left as they are. :func:`quiet_third_party` is cheap (it imports
nothing) and must run before the library that emits the notice is imported: the CLI and the service call it at
start, and the model loaders before they import transformers.
"""

from __future__ import annotations

import logging

#: (logger, words of the one message dropped).
#:
#: - torch.utils._pytree: torchao (installed with the dev extra, for the quantisation study) registers two enums as
#:   pytree constants when it is imported, and torch logs a deprecation notice for each ("W1206 ...
#:   <enum 'KernelPreference'> is an Enum subclass ..."). transformers imports torchao whenever it is installed
#:   (``transformers/quantizers/quantizer_torchao.py``, pulled in by ``modeling_utils``), so building a model on
#:   a fresh cache printed them, on paths that never quantise.
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    ("torch.utils._pytree", "Calling register_constant() on Enum subclasses is deprecated"),
)


class DropNotice(logging.Filter):
    """Drops the records whose message contains ``words``; lets every other record through."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words

    def filter(self, record: logging.LogRecord) -> bool:
        return self.words not in record.getMessage()


def quiet_third_party() -> None:
    """Install a :class:`DropNotice` for every entry of :data:`KNOWN_NOISE` (once per logger and notice)."""
    for name, words in KNOWN_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotice) and f.words == words for f in logger.filters):
            logger.addFilter(DropNotice(words))
