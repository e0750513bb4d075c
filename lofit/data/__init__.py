"""Turning task examples into padded token batches."""
