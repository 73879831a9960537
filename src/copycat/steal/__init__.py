"""The query stage: the loop under a budget (:mod:`.loop`), the answer store (:mod:`.store`)
and label-aware selection (:mod:`.selection`)."""
