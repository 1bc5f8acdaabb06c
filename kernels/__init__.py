"""Triton kernels of fastloss, installed as the package fastloss.kernels.

Each module exposes launchers that take and return torch tensors and implement one op
contract (the same as the C++/CUDA ops). The kernels run on CUDA tensors, and on CPU tensors
under TRITON_INTERPRET=1 (set before this package is imported). Nothing here imports fastloss.
"""
