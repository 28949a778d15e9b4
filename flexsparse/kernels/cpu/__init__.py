"""flexsparse.kernels.cpu"""
