"""Training side of the kit: models (``train.models``), losses, data, training and evaluation.

Never imports ``export`` or ``bench``.
"""
