-- Categories of items (DRCL's label-supervised mode: a catalogue filed under categories, with or
-- without image–text pairs). An item has zero or more labels; writers only add them.
CREATE TABLE amber.item_labels (
    item_id    bigint NOT NULL REFERENCES amber.items (item_id) ON DELETE CASCADE,
    label      text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, label)
);
CREATE INDEX item_labels_by_label ON amber.item_labels (label);
COMMENT ON TABLE amber.item_labels IS 'Categories of items (label-supervised training, label-based evaluation); added, never rewritten, by ingest and POST /v1/items';

-- Items per label and modality, and how many of them have features (what a label run can use).
CREATE VIEW amber.label_overview AS
SELECT l.label, i.modality,
       count(*)          AS items,
       count(f.item_id)  AS with_features,
       max(l.created_at) AS last_labelled_at
FROM amber.item_labels l
JOIN amber.items i USING (item_id)
LEFT JOIN amber.features f USING (item_id)
GROUP BY l.label, i.modality;
COMMENT ON VIEW amber.label_overview IS 'Items per label and modality (with features: usable by amber train --supervision labels)';

REVOKE ALL ON amber.item_labels, amber.label_overview FROM amber_app, amber_auditor;
GRANT SELECT, INSERT ON amber.item_labels TO amber_app;
GRANT SELECT ON amber.label_overview TO amber_app;
GRANT SELECT ON amber.item_labels, amber.label_overview TO amber_auditor;
