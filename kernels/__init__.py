"""Triton kernels (installed as culturegan.kernels), one module per op.

Modules here import triton; culturegan.ops imports them only when the triton backend runs.
"""
