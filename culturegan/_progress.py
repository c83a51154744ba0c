"""Progress bars, the one way culturegan shows them: tqdm.auto (a widget in a notebook, text on a
terminal), hidden when standard error is not a terminal, so that logs, pipes and CI stay clean,
or when the caller turns them off; and the log handler that writes above them."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

# False hides every bar of this process whatever its caller asked (`culturegan --quiet`)
_shown = True


def show_progress_bars(shown: bool) -> None:
    """Lets bars show (the default; still only on a terminal) or hides all of them."""
    global _shown
    _shown = shown


def progress_bar(iterable=None, *, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar over `iterable` (or, with total=..., one to update by hand); `options` are
    tqdm's (desc, unit, total, ...). disable=None is tqdm's "only on a terminal"."""
    return tqdm(iterable, disable=None if enabled and _shown else True, dynamic_ncols=True, **options)


class LogHandler(logging.Handler):
    """Writes each record on a line of its own on standard error, above the progress bars shown
    (a plain write would land in the middle of a bar). Standard error is looked up at every
    record, so the handler follows redirections made after it was installed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
