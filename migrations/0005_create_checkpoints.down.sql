DROP VIEW amber.checkpoint_overview;
DROP TABLE amber.checkpoints;
DROP INDEX amber.training_runs_name;
ALTER TABLE amber.training_runs DROP COLUMN name;
