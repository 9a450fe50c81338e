"""IO-free core: records, context-window policy, token estimates, trend statistics."""
