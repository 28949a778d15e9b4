"""flexsparse.kernels.triton"""
