"""A background job's states: what server/jobs.py records and clients/client.py reads.

queued -> running -> one of TERMINAL. A job that did not succeed ends `failed` (its record's
`error` says why, one line) or `cancelled` (DELETE /api/jobs/{id})."""
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
UNSUCCESSFUL = (FAILED, CANCELLED)
