"""Scoring a copycat against its oracle: metrics (:mod:`.metrics`) and the evaluation
(:mod:`.evaluate`)."""
