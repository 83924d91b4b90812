-- Execution leases: the worker running an execution holds it under a lease it renews while
-- the steps run. A second delivery of the same `workflow.execute` message (a publish sent
-- again, a broker redelivery) finds the lease live and runs nothing; once the holder stops
-- renewing (its process died), a delivery takes the execution over with a compare-and-set
-- on these columns and resumes it from its checkpoints. NULL on executions that are not
-- running (and on rows written before this migration: a running execution without a
-- lease may be taken over at once).
ALTER TABLE executions ADD COLUMN lease_owner TEXT;
ALTER TABLE executions ADD COLUMN lease_expires_at TIMESTAMPTZ;
