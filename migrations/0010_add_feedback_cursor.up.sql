-- The feedback a trainer had read when it wrote a checkpoint (the largest feedback_id): a resume
-- reads users' rejections up to it, so it goes on with the hard negatives it trained with.
ALTER TABLE amber.checkpoints ADD COLUMN feedback_cursor bigint NOT NULL DEFAULT 0 CHECK (feedback_cursor >= 0);
COMMENT ON COLUMN amber.checkpoints.feedback_cursor IS 'The largest feedback_id the trainer had read (rejected results as hard negatives)';
