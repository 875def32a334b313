"""Methods: backbones and heads, the method registry (one record per method), and the masked autoencoders."""
