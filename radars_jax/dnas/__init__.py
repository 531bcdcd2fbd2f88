"""Differentiable search: the pure train steps (single-level, first- and
second-order DARTS) and their compiled programs (`steps`), and one DNAS run
over a space or subspace (`search`)."""
