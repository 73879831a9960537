"""The query stage: the loop under a budget (:mod:`.loop`), the answer store (:mod:`.store`),
label-aware selection (:mod:`.selection`), query synthesis and active selection
(:mod:`.synthesis`), and the ``--selection`` registry (:mod:`.registry`, builders in
:mod:`.strategies`)."""
