"""Children that export trained weights (merging an adapter into its base)."""
