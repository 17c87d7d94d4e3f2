import AmberCatalog
@testable import AmberStore
import Testing

@Suite("Wire formats (no server)")
struct WireFormatTests {
    @Test func binaryArraysRoundTrip() throws {
        let values: [Float] = [1.5, -2, 0, .greatestFiniteMagnitude]
        let wire = PostgresValue.floats(values).wireFormat
        #expect(wire.type == 1021 && wire.binary)
        let bytes = wire.bytes!
        // ndim 1, no nulls, element type float4 (700), 4 elements, lower bound 1.
        #expect(Array(bytes.prefix(20)) == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 188, 0, 0, 0, 4, 0, 0, 0, 1])
        let decoded = try bytes.withUnsafeBytes { try [Float].decode(type: 1021, bytes: $0) }
        #expect(decoded == values)
        let ints = PostgresValue.ints([3, -4]).wireFormat.bytes!
        #expect(try ints.withUnsafeBytes { try [Int64].decode(type: 1016, bytes: $0) } == [3, -4])
        #expect(throws: PostgresError.self) {
            try ([0, 0, 0, 1] as [UInt8]).withUnsafeBytes { try [Float].decode(type: 1021, bytes: UnsafeRawBufferPointer($0)) }
        }
    }

    @Test func scalarsAreBigEndian() {
        #expect(PostgresValue.int(1).wireFormat.bytes! == [0, 0, 0, 0, 0, 0, 0, 1])
        #expect(PostgresValue.int32(-2).wireFormat.bytes! == [255, 255, 255, 254])
        #expect(PostgresValue.float(1).wireFormat.bytes! == [0x3F, 0x80, 0, 0])
        #expect(PostgresValue.text("é").wireFormat.bytes! == [0xC3, 0xA9, 0])
        #expect(PostgresValue.null.wireFormat.bytes == nil)
        #expect(PostgresValue.json("{}").wireFormat.bytes! == [1, 0x7B, 0x7D])
    }

    @Test func copyWriterWritesTheBinaryHeaderAndRows() {
        var writer = BinaryCopyWriter(columnCount: 2)
        writer.append([.int32(7), .text("ab")])
        writer.append([.null, .bytes([9])])
        let header: [UInt8] = Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(Array(writer.buffer.prefix(19)) == header)
        let rows = Array(writer.buffer.dropFirst(19))
        #expect(rows == [0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 2, 0x61, 0x62,
                         0, 2, 255, 255, 255, 255, 0, 0, 0, 1, 9])
        #expect(writer.rowCount == 2)
        #expect(BinaryCopyWriter.trailer == [255, 255])
    }

    @Test func sqlStatesMapToKindsAndAdvice() {
        #expect(PostgresError(code: "23505", message: "dup").kind == .uniqueViolation)
        #expect(PostgresError(code: "42P01", message: "no table").kind == .undefinedObject)
        #expect(PostgresError(code: "42P01", message: "no table").description.contains("run `amber migrate`"))
        #expect(PostgresError(code: "40001", message: "serialize").isTransient)
        #expect(PostgresError(code: "08006", message: "gone").kind == .connectionLost)
        #expect(PostgresError(code: "22P02", message: "bad").kind == .invalidData)
        #expect(!PostgresError(code: "42601", message: "syntax").isTransient)
    }

    @Test func urlsAreRedactedForLogs() {
        #expect(PostgresConnection.redact("postgresql://amber:secret@db:5432/amber") == "postgresql://amber:***@db:5432/amber")
        #expect(PostgresConnection.redact("postgresql:///amber?host=/tmp") == "postgresql:///amber?host=/tmp")
    }
}
