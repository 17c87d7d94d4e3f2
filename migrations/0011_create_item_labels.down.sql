DROP VIEW amber.label_overview;
DROP TABLE amber.item_labels;
