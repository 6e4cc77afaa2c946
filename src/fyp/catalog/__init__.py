"""The catalog: videos and what is known about them."""
