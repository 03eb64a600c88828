"""Train: evaluation, fine-tuning with masks enforced (one-shot, iterative, AGP), built-in model training."""
