DROP VIEW amber.feedback_rejections;
DROP VIEW amber.feedback_by_model;
DROP VIEW amber.feedback_overview;
DROP TABLE amber.feedback;
