"""Retraining a found genotype from scratch: the evaluation networks
(`networks`), the compiled init and train step (`steps`) and the resumable
training run (`train`)."""
