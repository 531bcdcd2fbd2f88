"""Retraining a found genotype from scratch: the evaluation networks and the
training loop."""
