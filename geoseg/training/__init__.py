"""Training: run configs, losses/optimizers/schedules, the time budget, scores from confusion matrices, the
baseline fit beside the network, weight averaging, logs, DDP, and the trainer that puts them together.
"""
