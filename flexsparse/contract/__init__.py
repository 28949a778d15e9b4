"""flexsparse.contract: einsum parser -> sparsity-aware cost -> planner -> executor, plus the
operator dispatch of every format (``dispatch``) and the bounded-memory glue (``_bounded``)."""
