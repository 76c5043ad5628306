"""Small command-line tools over the library (each also callable from Python)."""
