"""Proof that bulk sending scales out over a real multi-process Django Tasks worker."""
