"""Runtime stage: runs a runtime-spec bundle as a Linux container."""
