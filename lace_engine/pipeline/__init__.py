"""The pipeline's pure parts: strategy, context builder, proposals and their schemas, Apply's planning,
validator, compiler, and the tree they share. No I/O; imports no other layer.
"""
