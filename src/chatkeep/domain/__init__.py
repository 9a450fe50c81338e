"""IO-free core: records, reply bookkeeping and outcomes, context-window policy, token
estimates, edge validation, trend statistics."""
