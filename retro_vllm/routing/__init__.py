"""Domain routing: which domain (and so which adapter) answers a query."""
