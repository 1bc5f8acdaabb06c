"""fastloss ops: the torch.library custom ops of every backend and their autograd.

This is the only layer that knows about backends; functional.py calls into it.
"""
