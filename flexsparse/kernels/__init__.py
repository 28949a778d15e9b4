"""flexsparse.kernels"""
