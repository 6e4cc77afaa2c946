"""What an outside reviewer reads: the algorithm audit report."""
