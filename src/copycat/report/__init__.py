"""Rendering only: ``report.md`` (:mod:`.render`) and its figures (:mod:`.plots`)."""
