"""Dataset definitions, one module each, registered through entry points as a plugin's would be."""
