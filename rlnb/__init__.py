"""rlnb: shared kernels for research notebooks on RL for LLM reasoning.

The notebooks under ``notebooks/`` hold the narrative and the plots; every line
that two notebooks or a test would share lives here.
"""

__version__ = "0.1.0"
