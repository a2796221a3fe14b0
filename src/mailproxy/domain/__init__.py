"""The pure core: value types, validation, queue order, lifecycle and retry policy.

Nothing here performs I/O, reads a clock or draws random numbers: instants (`now`, float
Unix seconds), jitter samples and generated identifiers come in as arguments.
"""
