"""Sampling a trained transformer + tokenizer scale by scale.

:mod:`.logits` (CFG weight, filters, draw), :mod:`.runner` (the transformer one scale at a
time, the next scale's input), :mod:`.resample` (simple / masked token resampling),
:mod:`.loop` (the one per-scale loop, with hooks), :mod:`.adaptive` (the inference modes of the
learned sampling heads) and :mod:`.generate` (class-conditional generation). Posterior sampling (:mod:`scalewise.posterior`) runs the same loop.
"""
