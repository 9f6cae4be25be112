"""The endpoint plugin: HTTP routes that add retrieval, routing and citations."""
