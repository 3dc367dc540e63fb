"""What a person reads: one report module per named model (``coin.py``, ``vae.py`` ...: its
figures and the tour's rows, found by :func:`bayesdl.workflows.base.report_module`), the tour
(:mod:`.tour`, the HTML page :mod:`.page`, the sections ``tour_*`` and ``lecture_*``), the SBC
report and figures, and the VI-beside-NUTS comparison (:mod:`.compare`)."""
