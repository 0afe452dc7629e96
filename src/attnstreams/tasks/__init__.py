"""Synthetic tasks generated on the training device."""
