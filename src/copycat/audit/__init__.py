"""The owner's side of an audit: attacks run against defences over a matrix of cells (each a
run directory made by :mod:`copycat.pipeline`), and watermark verification of suspects."""
