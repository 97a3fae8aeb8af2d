"""The run record: one immutable, language-neutral account of a run, to and from NDJSON."""
