"""Unlabelled query images: sources (:mod:`.sources`) -> augmentation (:mod:`.augment`) ->
a seeded stream (:mod:`.pool`); the schemes are listed in :mod:`.registry`."""
