"""Evaluation: base vs few-shot vs tuned on held-out records. ``probe.jsonl`` holds 40 general tasks (the
first short ones of Stanford Alpaca's ``seed_tasks.jsonl``, Apache-2.0) used to catch forgetting."""
