"""``copycat serve``: routes (:mod:`.app`), guards (:mod:`.guards`), request decoding
(:mod:`.decode`) and test-only fault injection (:mod:`.faults`)."""
