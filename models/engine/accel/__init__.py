"""Accelerations the engine switches on where they pay: CUDA graphs, packed CPU weights, a frozen heap."""
