"""scalekit's example services (importable as ``examples.<service>`` from a checkout)."""
