"""Checkpoints a trained model is shipped in: ours (inference exports) and the authors'
PyTorch state_dict, both ways. Below evaluation and training, above the model and coding.
"""
