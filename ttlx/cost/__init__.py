"""What a network costs: parameters, MACs, latency, and the table of architectures behind ``ttlx models``."""
