"""The search space: candidate ops, spaces and subspaces, genotypes, the
supernet (static per subspace, switched, scanned) and the weight pool."""
