"""The command line (cli*.py), the embedded demo and the embedded servers."""
