"""jobhook: callbacks, polling and durable job state for asynchronous image generation."""

__version__ = "0.1.0"
