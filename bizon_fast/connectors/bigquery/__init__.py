"""BigQuery: connection helper, Arrow type mapping, and the three destinations (``bigquery``,
``bigquery_streaming``, ``bigquery_streaming_v2``); the checkpoint backend lives in ``checkpoint/bigquery.py``."""
