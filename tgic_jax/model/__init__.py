"""The model: layers, transforms, the text adapter, entropy models, TACO, and the text
encoders (CLIP, MiniLM) that condition it.
"""
