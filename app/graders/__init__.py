"""Graders: what *right* means for a task, in OpenAI's shapes (string_check, text_similarity, python, multi).
One implementation, torch-free, used by the /v1 graders endpoints (and, next, by evaluations, /v1/evals runs
and the reward of reinforcement fine-tuning). A python grader runs in a sandbox child (sandbox.py)."""
