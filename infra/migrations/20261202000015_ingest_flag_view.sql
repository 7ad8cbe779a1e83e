-- Each ingest instance reports which queue mode it is in and when it last read the flag, in its
-- ledger heartbeat: `ops status` shows whether every instance followed a switch.
ALTER TABLE ops.ingest_ledger
    ADD COLUMN queue_mode boolean,
    ADD COLUMN queue_mode_read_at timestamptz;
