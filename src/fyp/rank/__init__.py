"""Ranking: predict engagement per candidate and combine it into one value score."""
