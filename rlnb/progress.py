"""Progress bars: on for a reader at the keyboard, off for an execution whose outputs are committed.

``RLNB_PROGRESS=0`` switches off every bar the series would draw: TRL's training
bar, transformers' weight-loading and saving bars and datasets' bars. Committed
notebooks are executed that way, so their outputs hold results, not bars.
"""

from __future__ import annotations

import os


def progress_enabled() -> bool:
    """False when ``RLNB_PROGRESS`` is ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get("RLNB_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def silence_library_bars() -> None:
    """Switch off transformers' and datasets' own progress bars for this process."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
