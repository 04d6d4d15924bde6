"""Dispatch runs: saved in bulk, all or nothing, never changed afterwards; read back by id, as
the latest run of a site (and date), or listed newest first, in the shapes of the contract.

records: what a stored run is; write: saving runs; read: reading them back. Importers take the
public names from dispatch_pipeline.storage."""
