"""Bundle stage: turns an image from the store into a runtime bundle (rootfs + config.json)."""
