"""Traffic: stored completions reviewed and turned into datasets."""
