"""flexsparse.contract: einsum parser -> sparsity-aware cost -> planner -> executor."""
