"""Candidate sources: each proposes videos for a feed request, and fails open."""
