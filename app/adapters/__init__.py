"""The adapter registry: every trained adapter with what made it (lineage back to the upload) and what was
made from it (evaluations, judgements, feedback and the preference datasets built from it)."""
