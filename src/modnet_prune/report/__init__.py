"""Presentation of measured numbers: the pipeline's Markdown/HTML report and figures, and
the console tables of `analyze` and `benchmark`. Nothing here measures (see `measure/`)."""
