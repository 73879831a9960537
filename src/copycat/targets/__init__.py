"""Victims to audit: training and publishing targets (:mod:`.publish`) and the development
suite of targets (:mod:`.suite`)."""
