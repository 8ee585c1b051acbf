"""upload: the upload service: streaming multipart ingest, storage and owner-only resolution."""
