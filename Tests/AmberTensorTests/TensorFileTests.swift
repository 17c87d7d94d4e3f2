@testable import AmberTensor
import Foundation
import AmberTestSupport
import Testing

/// A fresh temporary directory for one test.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "amber-tests-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func bytes(hex: String) -> [UInt8] {
    var result: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        result.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return result
}

func writeBytes(_ data: [UInt8], to path: String) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(data))
}

@Suite("npy files")
struct NumpyFileTests {
    // Bytes written by numpy 2.4 `np.save`.
    static let float16Hex = "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a003e00c080420000ff7b00b8"
    static let int64Hex = "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028342c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a00000000000000000500000000000000f9ffffffffffffff0000000000010000"
    static let float32Hex = "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2032292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000803f000000400000404000008040"

    @Test func readsFilesWrittenByNumpy() throws {
        let directory = temporaryDirectory()
        writeBytes(bytes(hex: Self.float16Hex), to: directory + "/h.npy")
        writeBytes(bytes(hex: Self.int64Hex), to: directory + "/i.npy")
        writeBytes(bytes(hex: Self.float32Hex), to: directory + "/f.npy")
        let half = try NumpyFile.read(directory + "/h.npy")
        #expect(half.elementType == .float16 && half.shape == [2, 3])
        #expect(try half.tensor().scalars == [1.5, -2, 3.25, 0, 65504, -0.5])
        let integers = try NumpyFile.read(directory + "/i.npy")
        #expect(integers.shape == [4])
        #expect(try integers.int64Values() == [0, 5, -7, 1 << 40])
        let single = try NumpyFile.read(directory + "/f.npy").tensor()
        #expect(single.shape == [2, 2] && single.scalars == [1, 2, 3, 4])
    }

    @Test func writesWhatNumpyWrites() throws {
        let directory = temporaryDirectory()
        try NumpyFile.write(Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]), to: directory + "/f.npy")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/f.npy"))) == bytes(hex: Self.float32Hex))
        try NumpyFile.write([0, 5, -7, 1 << 40], shape: [4], to: directory + "/i.npy")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/i.npy"))) == bytes(hex: Self.int64Hex))
        try NumpyFile.write(Tensor(shape: [2, 3], scalars: [1.5, -2, 3.25, 0, 65504, -0.5]), to: directory + "/h.npy", as: .float16)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/h.npy"))) == bytes(hex: Self.float16Hex))
    }

    @Test func roundTripsAndReadsRows() throws {
        let directory = temporaryDirectory()
        let x = randomTensor([5, 3, 2], seed: 1)
        try NumpyFile.write(x, to: directory + "/x.npy")
        let array = try NumpyFile.read(directory + "/x.npy")
        #expect(try array.tensor().scalars == x.scalars)
        #expect(try array.tensor(rows: 2..<4).scalars == x.slice(axis: 0, 2..<4).scalars)
        // A mapped float32 tensor is read-only storage: writing copies.
        var mapped = try array.tensor()
        mapped[0, 0, 0] = 7
        #expect(try array.tensor()[0, 0, 0] == x[0, 0, 0])
        let scalar = Tensor(3.5)
        try NumpyFile.write(scalar, to: directory + "/s.npy")
        #expect(try NumpyFile.read(directory + "/s.npy").tensor().scalar == 3.5)
    }

    /// The file's bytes with its header's `'fortran_order': False` turned to `True` (data untouched).
    static func flaggedFortran(_ file: [UInt8], as flag: String = "True ") -> [UInt8] {
        var out = file
        let key = Array("'fortran_order': False".utf8)
        guard let at = (0...(min(file.count, 256) - key.count)).first(where: { Array(file[$0 ..< $0 + key.count]) == key }) else { return file }
        out.replaceSubrange((at + key.count - 5) ..< (at + key.count), with: Array(flag.utf8))
        return out
    }

    /// NumPy writes a Fortran-order array (e.g. a transposed or MATLAB-born one) with its first
    /// index fastest; it reads as the same array in C order.
    @Test func readsFortranOrderArrays() throws {
        let directory = temporaryDirectory()
        // The 2 × 2 file [1, 2, 3, 4] flagged Fortran order is [[1, 3], [2, 4]].
        let flagged = directory + "/f2.npy"
        writeBytes(Self.flaggedFortran(bytes(hex: Self.float32Hex)), to: flagged)
        #expect(try NumpyFile.read(flagged).tensor().scalars == [1, 3, 2, 4])
        // A 2 × 3 × 4 int64 and float32 array, laid out first index fastest by hand.
        let shape = [2, 3, 4]
        let x = randomTensor(shape, seed: 3)
        var fortranValues: [Float] = [], fortranIntegers: [Int64] = []
        for k in 0..<4 { for j in 0..<3 { for i in 0..<2 {
            fortranValues.append(x[i, j, k])
            fortranIntegers.append(Int64(i * 100 + j * 10 + k))
        } } }
        for (name, write) in [("x", { try NumpyFile.write(Tensor(shape: shape, scalars: fortranValues), to: $0) }),
                              ("n", { try NumpyFile.write(fortranIntegers, shape: shape, to: $0) })] as [(String, (String) throws -> Void)] {
            let path = directory + "/\(name).npy"
            try write(path)
            writeBytes(Self.flaggedFortran(Array(try Data(contentsOf: URL(fileURLWithPath: path)))), to: path)
        }
        let values = try NumpyFile.read(directory + "/x.npy")
        #expect(values.shape == shape)
        #expect(try values.tensor().scalars == x.scalars)
        var expected: [Int64] = []
        for i in 0..<2 { for j in 0..<3 { for k in 0..<4 { expected.append(Int64(i * 100 + j * 10 + k)) } } }
        #expect(try NumpyFile.read(directory + "/n.npy").int64Values() == expected)
    }

    @Test func truncatedAndMistypedFilesNameTheFileAndTheProblem() throws {
        let directory = temporaryDirectory()
        let good = bytes(hex: Self.float32Hex)
        let truncated = directory + "/truncated.npy"
        writeBytes(Array(good.dropLast(3)), to: truncated)
        #expect(throws: TensorFileError(path: truncated, problem: "truncated data: shape [2, 2] of float32 needs 16 bytes, file has 13")) {
            try NumpyFile.read(truncated)
        }
        let header = directory + "/header.npy"
        writeBytes(Array(good.prefix(40)), to: header)
        #expect(throws: TensorFileError(path: header, problem: "truncated header: needs 118 bytes, file has 30")) {
            try NumpyFile.read(header)
        }
        var double = good
        let descrAt = String(decoding: good, as: UTF8.self).range(of: "<f4")!.lowerBound.utf16Offset(in: String(decoding: good, as: UTF8.self))
        double[descrAt + 2] = UInt8(ascii: "8")
        let mistyped = directory + "/double.npy"
        writeBytes(double, to: mistyped)
        do {
            _ = try NumpyFile.read(mistyped)
            Issue.record("a float64 file must be rejected")
        } catch let error as TensorFileError {
            #expect(error.path == mistyped)
            #expect(error.problem.contains("'<f8' is not supported"))
        }
        let unreadableOrder = directory + "/order.npy"
        writeBytes(Self.flaggedFortran(good, as: "Maybe"), to: unreadableOrder)
        #expect(throws: TensorFileError(path: unreadableOrder, problem: "cannot read 'fortran_order' in the header")) { try NumpyFile.read(unreadableOrder) }
        let notNpy = directory + "/text.npy"
        writeBytes(Array("hello world".utf8), to: notNpy)
        #expect(throws: TensorFileError.self) { try NumpyFile.read(notNpy) }
        #expect(throws: TensorFileError.self) { try NumpyFile.read(directory + "/missing.npy") }
        #expect(throws: TensorFileError(path: directory + "/i.npy", problem: "holds int64 values; a float tensor was expected")) {
            try NumpyFile.write([1], shape: [1], to: directory + "/i.npy")
            _ = try NumpyFile.read(directory + "/i.npy").tensor()
        }
    }
}

@Suite("safetensors files")
struct SafetensorsFileTests {
    @Test func roundTripsEveryDtypeAndMetadata() throws {
        let path = temporaryDirectory() + "/model.safetensors"
        let weights = randomTensor([3, 4], seed: 1)
        let halves = Tensor(shape: [3], scalars: [0.5, -1.25, 1024])
        let brain = Tensor(shape: [2], scalars: [1.5, -3.0])
        try SafetensorsFile.write([
            "layer.weight": .float(weights, .float32),
            "layer.half": .float(halves, .float16),
            "layer.bf16": .float(brain, .bfloat16),
            "positions": .int64([3, -1, 7, 0], shape: [2, 2]),
        ], metadata: ["format": "pt"], to: path)
        let file = try SafetensorsFile(path: path)
        #expect(file.names == ["layer.bf16", "layer.half", "layer.weight", "positions"])
        #expect(file.metadata == ["format": "pt"])
        #expect(try file.tensor("layer.weight").scalars == weights.scalars)
        #expect(try file.tensor("layer.half").scalars == halves.scalars)
        #expect(try file.tensor("layer.bf16").scalars == brain.scalars)
        #expect(try file.arrays["positions"]!.int64Values() == [3, -1, 7, 0])
        #expect(file.arrays["positions"]!.shape == [2, 2])
        #expect(throws: TensorFileError.self) { try file.tensor("absent") }
    }

    @Test func readsAHandBuiltFileAsTheSpecDescribes() throws {
        // Header per the safetensors spec, with data offsets relative to the end of the header.
        let header = #"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        var data = [UInt8](repeating: 0, count: 8)
        let length = UInt64(header.utf8.count)
        for i in 0..<8 { data[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(i))) }
        data += Array(header.utf8)
        data += [0x80, 0x3F, 0x00, 0xC0]          // bf16 1.0, -2.0
        data += [0x00, 0x00, 0x20, 0x41]          // f32 10.0
        let path = temporaryDirectory() + "/hand.safetensors"
        writeBytes(data, to: path)
        let file = try SafetensorsFile(path: path)
        #expect(try file.tensor("a").scalars == [1, -2])
        #expect(try file.tensor("b").scalars == [10])
    }

    @Test func bfloat16RoundsToNearestEven() {
        #expect(ElementEncoding.bfloat16Bits(1.0) == 0x3F80)
        #expect(ElementEncoding.bfloat16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)   // tie → even
        #expect(ElementEncoding.bfloat16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)   // tie → even
        #expect(ElementEncoding.bfloat16Bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
    }

    @Test func truncatedAndMistypedFilesNameTheFileAndTheProblem() throws {
        let directory = temporaryDirectory()
        let path = directory + "/ok.safetensors"
        try SafetensorsFile.write(["w": .float(randomTensor([4, 4], seed: 2), .float32)], to: path)
        let good = Array(try Data(contentsOf: URL(fileURLWithPath: path)))

        let truncated = directory + "/truncated.safetensors"
        writeBytes(Array(good.dropLast(10)), to: truncated)
        #expect(throws: TensorFileError(path: truncated, problem: "truncated data: tensor 'w' ends at byte 64 of the data, which has 54")) {
            try SafetensorsFile(path: truncated)
        }
        let headerCut = directory + "/header.safetensors"
        writeBytes(Array(good.prefix(20)), to: headerCut)
        do {
            _ = try SafetensorsFile(path: headerCut)
            Issue.record("a cut header must be rejected")
        } catch let error as TensorFileError {
            #expect(error.path == headerCut && error.problem.hasPrefix("truncated header"))
        }
        let wrongType = directory + "/f64.safetensors"
        writeBytes(Array(String(decoding: good, as: UTF8.self).replacingOccurrences(of: "\"F32\"", with: "\"F64\"").utf8), to: wrongType)
        #expect(throws: TensorFileError(path: wrongType, problem: "tensor 'w': dtype F64 is not supported (F32, F16, BF16, I64)")) {
            try SafetensorsFile(path: wrongType)
        }
        let tiny = directory + "/tiny.safetensors"
        writeBytes([1, 2, 3], to: tiny)
        #expect(throws: TensorFileError.self) { try SafetensorsFile(path: tiny) }
    }

    @Test func bytesInMemoryReadAsTheFileWouldAndOutliveTheirSource() throws {
        let directory = temporaryDirectory()
        let weights = randomTensor([5, 3], seed: 4)
        let entries: [String: SafetensorsFile.Entry] = ["w": .float(weights, .float32), "n": .int64([1, 2], shape: [2])]
        try SafetensorsFile.write(entries, metadata: ["k": "v"], to: directory + "/a.safetensors")
        var bytes = try SafetensorsFile.encode(entries, metadata: ["k": "v"]).flatMap { $0 }
        #expect(bytes == Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/a.safetensors"))), "encode is what write writes")
        let file = try SafetensorsFile(bytes: bytes, name: "row 7")
        bytes = []                                     // the parsed file keeps its own copy
        let tensor = try file.tensor("w")
        #expect(tensor.scalars == weights.scalars && file.metadata == ["k": "v"])
        #expect(try file.arrays["n"]!.int64Values() == [1, 2])
        #expect { try SafetensorsFile(bytes: [1, 2, 3], name: "row 8") } throws: { "\($0)".hasPrefix("row 8: truncated") }
    }

    @Test func atomicWriteLeavesNoTemporaryFiles() throws {
        let directory = temporaryDirectory()
        try SafetensorsFile.write(["w": .float(Tensor.ones([2]), .float32)], to: directory + "/a.safetensors")
        try SafetensorsFile.write(["w": .float(Tensor.zeros([2]), .float32)], to: directory + "/a.safetensors")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["a.safetensors"])
        #expect(try SafetensorsFile(path: directory + "/a.safetensors").tensor("w").scalars == [0, 0])
        #expect(throws: TensorFileError.self) {
            try SafetensorsFile.write(["w": .float(Tensor.ones([2]), .float32)], to: directory + "/no/such/dir/a.safetensors")
        }
    }
}
