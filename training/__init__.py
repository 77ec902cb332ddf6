"""Training side of ednn-dask: EDNN module, tile networks, data sets, export."""
