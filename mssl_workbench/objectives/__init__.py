"""The losses: Matrix-SSL and every objective it unifies, one calling convention, one registry."""
