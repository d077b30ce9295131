"""Data pipeline: schema -> readers -> encoder -> store -> loader."""
