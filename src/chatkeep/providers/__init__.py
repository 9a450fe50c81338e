"""Model backends: one module per wire format, all behind `providers.base.Provider`."""
