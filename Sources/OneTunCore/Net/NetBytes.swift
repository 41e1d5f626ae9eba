// Big-endian loads and stores for the wire views.
//
// The views check every length once in `init(validating:)`; after that these are plain unaligned loads.
// `loadUnaligned` / `storeBytes` keep their bounds checks in debug builds only, which is what we want: a
// wrong offset is a bug in this module, found by tests and fuzzing, not a per-packet cost in release.

extension UnsafeRawBufferPointer {
    @inline(__always) func netU16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always) func netU32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always) func netU64(_ offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// `self[from..<to]` as a buffer of its own (indices from zero).
    @inline(__always) func netSlice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[from..<to])
    }

    @inline(__always) func netSlice(from: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[from...])
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always) func netStore(_ value: UInt8, at offset: Int) {
        storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    @inline(__always) func netStore(_ value: UInt16, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always) func netStore(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inline(__always) func netStore(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    @inline(__always) func netSlice(_ from: Int, _ to: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[from..<to])
    }
}
