"""The mutant catalogue: one module per area, each defining ``MUTANTS: list[Mutant]``."""
