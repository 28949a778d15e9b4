"""flexsparse.formats"""
