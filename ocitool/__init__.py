"""ocitool: pull OCI images, unpack them into runtime bundles, and run them.

The package is a pipeline of three stages that talk through plain data:
``ocitool.image`` (registry -> OCI image layout), ``ocitool.bundle``
(image layout -> rootfs + config.json) and ``ocitool.runtime``
(bundle -> running container). ``ocitool.cli`` only parses and prints.
"""

__version__ = "0.1.0"
