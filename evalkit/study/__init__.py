"""Comparisons between cells: paired differences with their CI (ties inside the noise), real-vs-real noise
floors, rankings and Pareto frontiers made only within equal N. Read by the run summary, the report and the
gate; it reads run folders (:mod:`evalkit.store`) and never runs a suite."""
