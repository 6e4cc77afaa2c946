"""After ranking: filters (what may not be shown) and re-rankers (how the page is laid out)."""
