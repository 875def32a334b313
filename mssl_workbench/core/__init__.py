"""The numeric core: matrix functions (logarithms, entropies, cross-entropy, effective rank), the monitor's metrics, and the float64 test helpers."""
