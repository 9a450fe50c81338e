"""Moving whole conversations in and out: the export format, export and import.

* `format` — the versioned document model (version 1) and its checks.
* `documents` — reading a document's bytes (JSON or YAML) without trusting them.
* `export` — writing a document piece by piece, in bounded memory.
* `importer` — checking and storing each conversation of a document, with a report.
* `problems` — what an import says is wrong, in the format's own words.

``docs/export-format.md`` describes the format for people; ``docs/export-format.schema.json``
is its JSON Schema.
"""
