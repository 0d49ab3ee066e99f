"""The building blocks every method calls: audio and data splits, batching, models (quantisation, adapters),
the optimiser step and step loop, checkpoints, transcription tasks and evaluation, the end of a trial, metrics,
progress and the Ray Train launch. Nothing here belongs to one method; a method's own pieces live beside its file
(`trainables/<method>.py`, `trainables/<method>_*.py`)."""
