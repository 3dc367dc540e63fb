"""What a person reads: the HTML page (:mod:`.page`), the tour's sections (``tour_*``), the
SBC report and figures, and the VI-beside-NUTS comparison (:mod:`.compare`)."""
