"""`make bench`: the pipeline against the COPY limit and the paths users would otherwise take."""
