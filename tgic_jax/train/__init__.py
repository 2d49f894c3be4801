"""Training: input pipeline, device mesh, checkpoints, losses, the train loop and throughput
instruments.
"""
