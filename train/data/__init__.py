"""Training data: the synthetic forgery generator (``forge``, drawing on ``sources`` and
``shapes``), image distortions shared with evaluation (``distortions``), dataset layouts
on disk (``folders``), the torch dataset and resumable sampler (``dataset``) and Simplex
noise for diffusion pre-training (``simplex``)."""
from .folders import DataError, Sample, check_samples, load_pair, read_samples, write_dataset

__all__ = ["DataError", "Sample", "check_samples", "load_pair", "read_samples", "write_dataset"]
