"""One checkpoint audited (a package named so that it never shadows the function
:func:`pyaudit.audit`), in rooms: report types (:mod:`.results`), structure checks
(:mod:`.structure`: files, index, shard numbering), contents against the expectation
(:mod:`.compare`, its native fast path :mod:`.match`), and the pipeline that runs them
top to bottom (:mod:`.pipeline`).

Nothing is imported here: ``pyaudit.report`` imports :mod:`.results` alone, without
pulling in the pipeline.
"""
