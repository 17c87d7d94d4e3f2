import AmberCatalog

/// The feature dimensions a modality's items have in the database (`amber.feature_dimensions`,
/// fixed by the first items stored).
public enum FeatureDimensions {
    /// Records `global` + n×`local` for `modality` unless a row exists (concurrent first writers
    /// agree: `ON CONFLICT DO NOTHING` waits for the other's commit), and returns what is stored.
    public static func register(modality: Modality, global: Int, local: Int, on connection: PostgresConnection) throws -> (global: Int, local: Int) {
        try connection.execute("""
            INSERT INTO amber.feature_dimensions (modality, global_dim, local_dim) VALUES ($1::amber.modality, $2, $3)
            ON CONFLICT DO NOTHING
            """, [.text(modality.rawValue), .int(Int64(global)), .int(Int64(local))])
        let stored = try connection.execute("SELECT global_dim, local_dim FROM amber.feature_dimensions WHERE modality = $1::amber.modality", [.text(modality.rawValue)])
        return (try stored.value(Int.self, column: "global_dim"), try stored.value(Int.self, column: "local_dim"))
    }
}
