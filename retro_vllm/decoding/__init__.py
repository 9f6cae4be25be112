"""Prompt assembly, citation extraction and (later) the logits processor."""
