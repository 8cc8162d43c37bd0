"""The version of pipecat-langfuse (read by the build, and exported as ``pipecat_langfuse.__version__``)."""

__version__ = "0.2.0"
