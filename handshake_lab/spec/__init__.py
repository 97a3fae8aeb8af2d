"""Labs as data: the model (frozen dataclasses) and the TOML loader. No I/O but reading files."""
