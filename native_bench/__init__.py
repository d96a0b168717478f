"""The benchmark suite: the engine against the physical limit and against the alternatives."""
