"""The targets copycat may only query: the protocol (:mod:`.base`), local backends
(:mod:`.local`), output restrictions (:mod:`.outputs`), HTTP targets (:mod:`.http`) and the
``scheme:id`` registry (:mod:`.registry`)."""
