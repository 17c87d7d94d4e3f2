ALTER TABLE amber.checkpoints DROP COLUMN feedback_cursor;
