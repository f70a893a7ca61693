"""The Flex Edge agent: domain, workflow, event store, vision and CLI."""

__version__ = "0.1.0"
