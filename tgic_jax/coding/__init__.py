"""Real bitstreams: coding tables, the range coder, the file container and the codec (the bit-
exact boundary).
"""
