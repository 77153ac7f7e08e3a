"""Distributed training: model builders, the per-worker loop, and the Ray Train trainer."""
