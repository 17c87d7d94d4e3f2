-- Back to the definition of 0003 (each caption against every bank entry of its image).
CREATE OR REPLACE VIEW amber.prototype_overview AS
WITH sizes AS (
    SELECT run_id, prototype,
           count(*) FILTER (WHERE modality = 'image') AS image_entries,
           count(*) FILTER (WHERE modality = 'text')  AS text_entries
    FROM amber.memory_bank
    WHERE prototype IS NOT NULL
    GROUP BY run_id, prototype
), agreement AS (
    SELECT t.run_id, t.prototype,
           count(*)                                    AS paired_texts,
           avg((i.prototype = t.prototype)::integer)::real AS agreement
    FROM amber.memory_bank t
    JOIN amber.memory_bank i ON i.run_id = t.run_id AND i.modality = 'image' AND i.item_id = t.image_id
    WHERE t.modality = 'text' AND t.prototype IS NOT NULL
    GROUP BY t.run_id, t.prototype
)
SELECT s.run_id, s.prototype, s.image_entries, s.text_entries,
       s.image_entries + s.text_entries AS entries,
       coalesce(a.paired_texts, 0)      AS paired_texts,
       a.agreement
FROM sizes s
LEFT JOIN agreement a USING (run_id, prototype);
