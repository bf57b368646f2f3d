"""Synthetic metering traffic with labelled incidents and benign look-alikes; simulate.py is
the entry point, the modules below it are imported one way."""
