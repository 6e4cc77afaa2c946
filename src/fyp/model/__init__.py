"""Learned models: embedding tables, two-tower retrieval, multi-task ranker, online trainer."""
