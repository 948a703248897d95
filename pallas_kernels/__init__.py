"""Pallas kernels for the zoo: MoD routing gathers/scatters and MoE expert dispatch."""
