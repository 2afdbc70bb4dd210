"""rlnb: shared kernels for research notebooks on RL for LLM reasoning.

The notebooks under ``notebooks/`` hold the narrative and the plots; every line
that two notebooks or a test would share lives here.
"""

import warnings

# tqdm.auto warns once per kernel when ipywidgets is missing, then falls back to a text bar that works.
warnings.filterwarnings("ignore", message="IProgress not found")
# TRL 1.16 still asks transformers for `is_gradient_checkpointing`, which transformers deprecates in favour
# of `is_activation_checkpointing`: a warning for TRL's maintainers, not for a reader, printed every run.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

from rlnb.progress import progress_enabled as _progress_enabled  # noqa: E402

if not _progress_enabled():
    from rlnb.progress import silence_library_bars

    silence_library_bars()

__version__ = "0.1.0"
