"""The version of pipecat-langfuse.

The build reads it from here (``[tool.hatch.version]`` in ``pyproject.toml``), and the package
exports it as ``pipecat_langfuse.__version__``. Each release is described in ``CHANGELOG.md``.
"""

__version__ = "0.2.0"
"""This release's version (PEP 440)."""
