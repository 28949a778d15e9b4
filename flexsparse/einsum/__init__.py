"""flexsparse.einsum"""
