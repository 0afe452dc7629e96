"""attnstreams: AMICL and residual attention streams."""

__version__ = "0.1.0"
