from bizon_fast.checkpoint.base import CheckpointBackend, JobRecord, JobStatus

__all__ = ["CheckpointBackend", "JobRecord", "JobStatus"]
