-- A poll is owned by the worker that claimed it (locked_by), so a worker that outlived its
-- lock cannot reschedule a poll another worker already moved on. A poll that fails the same
-- way every time is parked for operators instead of being woken forever.
ALTER TABLE polls ADD COLUMN locked_by uuid;
ALTER TABLE polls ADD COLUMN parked_at timestamptz;
ALTER TABLE polls ADD COLUMN parked_reason text;
