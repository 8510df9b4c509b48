"""Built-in studies: one file per claim of the lecture notes (``attnbench study list``)."""
